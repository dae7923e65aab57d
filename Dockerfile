# syntax=docker/dockerfile:1
# One image for the API, the worker and the migration job; the command picks the role.
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY control_api ./control_api
COPY stream_worker ./stream_worker
COPY shared ./shared
COPY ws_gateway_dev.py ws_gateway_admin.py alembic.ini ./
COPY alembic ./alembic
RUN uv sync --frozen --no-dev

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /app gateway
WORKDIR /app
COPY --from=build --chown=gateway:gateway /app /app
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 LOG_FORMAT=json WS_GATEWAY_HOST=0.0.0.0
USER gateway
EXPOSE 4400
CMD ["ws-gateway-api"]
