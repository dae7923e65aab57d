"""Entry point of `ws-gateway-worker`.

Until the stream worker lands (its own issue) this validates the settings, says what it would serve, and idles
until SIGINT/SIGTERM, so the launcher and the compose stack already have their shape.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from loguru import logger

from shared.config import ConfigError
from stream_worker.logging import configure_logging
from stream_worker.settings import WorkerSettings


async def idle_until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def main() -> None:
    try:
        settings = WorkerSettings.from_env(os.environ)
    except ConfigError as error:
        print(f"ws-gateway-worker: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    if not settings.has_credentials:
        logger.info("no BYBIT_API_KEY/BYBIT_API_SECRET: serving public market data only")
    logger.bind(environment=settings.bybit_environment).warning(
        "stream worker not implemented yet: idling until stopped"
    )
    asyncio.run(idle_until_signalled())
    logger.info("stream worker stopped")


if __name__ == "__main__":
    main()
