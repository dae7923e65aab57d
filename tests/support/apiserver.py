"""The API served by a real uvicorn server inside the test's event loop, reached over TCP with httpx.

Everything runs on one loop, so shutdown (lifespan, relay, engine) follows the same path as production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn

from control_api.app import create_app
from control_api.settings import ApiSettings
from tests.support.waiting import wait_until


@asynccontextmanager
async def serve_api(settings: ApiSettings) -> AsyncIterator[str]:
    """Serve the API on a free port; yields its base URL."""
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        await wait_until(lambda: server.started or serving.done(), timeout=15, what="uvicorn started")
        if serving.done():
            serving.result()  # surfaces the start-up error
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@asynccontextmanager
async def api_client(settings: ApiSettings, api_key: str | None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-API-Key": api_key} if api_key else {}
    async with (
        serve_api(settings) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client,
    ):
        yield client
