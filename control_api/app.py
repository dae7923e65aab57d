"""The Litestar application factory: routes, lifespan-owned resources, one error shape."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from loguru import logger

from control_api.asyncapi import asyncapi_routes
from control_api.audit import provide_access, record_failed_write
from control_api.db import Database, create_engine
from control_api.errors import ApiError, api_error, http_error, unexpected_error
from control_api.metrics import ApiMetrics, metrics_endpoint
from control_api.notices import OutboxRelay
from control_api.ratelimit import WriteRateLimiter, limit_writes, reject_unknown_query
from control_api.routes.audit import AuditController
from control_api.routes.balances import BalanceController
from control_api.routes.health import health
from control_api.routes.subscriptions import SubscriptionController
from control_api.routes.workers import WorkerController
from control_api.security import API_KEY_HEADER, Keyring, merge_keys, require_api_key
from control_api.settings import ApiSettings
from control_api.status import status_routes
from control_api.tracing import trace_middleware
from shared.config import redact_url

Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]


def database(settings: ApiSettings) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = Database(create_engine(settings.database_url, settings.db_timeout), settings.db_timeout)
        app.state.database = db
        logger.bind(database=redact_url(settings.database_url)).info("database engine ready")
        try:
            yield
        finally:
            await db.close()

    return lifespan


def outbox_relay(settings: ApiSettings) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        relay = OutboxRelay(app.state.database, settings.rabbitmq_url, retry_max=settings.relay_retry_max)
        app.state.relay = relay
        task = asyncio.create_task(relay.run(), name="outbox-relay")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


def provide_database(state: State) -> Database:
    db: Database = state.database
    return db


def provide_relay(state: State) -> OutboxRelay:
    relay: OutboxRelay = state.relay
    return relay


def create_app(settings: ApiSettings) -> Litestar:
    api = Router(
        path="/api/v1",
        route_handlers=[SubscriptionController, BalanceController, WorkerController, AuditController],
        guards=[require_api_key, limit_writes, reject_unknown_query],
        dependencies={"access": Provide(provide_access, sync_to_thread=False)},
        security=[{"ApiKey": []}],
    )
    metrics = ApiMetrics()
    return Litestar(
        route_handlers=[api, health, asyncapi_routes, status_routes, metrics_endpoint],
        lifespan=[database(settings), outbox_relay(settings)],
        state=State(
            {
                "keyring": Keyring(merge_keys(settings.api_keys, settings.scoped_keys, "WS_GATEWAY_API_KEYS")),
                "worker_stale_after": settings.worker_stale_after,
                "write_limiter": WriteRateLimiter(settings.write_rate, settings.write_burst),
                "metrics": metrics,
            }
        ),
        dependencies={
            "db": Provide(provide_database, sync_to_thread=False),
            "relay": Provide(provide_relay, sync_to_thread=False),
        },
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
        after_exception=[record_failed_write],
        middleware=[DefineMiddleware(trace_middleware, on_complete=metrics.observe)],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="ws-gateway control API",
            version="1.0.0",
            path="/schema",
            components=Components(
                security_schemes={
                    "ApiKey": SecurityScheme(type="apiKey", name=API_KEY_HEADER, security_scheme_in="header")
                }
            ),
        ),
        logging_config=None,
        debug=False,
    )
