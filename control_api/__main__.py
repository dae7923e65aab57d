"""Entry point of `ws-gateway-api`: read settings, configure logging, serve the API."""

from __future__ import annotations

import os
import sys

import uvicorn
from loguru import logger

from control_api.app import create_app
from control_api.logging import configure_logging
from control_api.settings import ApiSettings
from shared.config import ConfigError


def main() -> None:
    try:
        settings = ApiSettings.from_env(os.environ)
    except ConfigError as error:
        print(f"ws-gateway-api: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    logger.bind(host=settings.host, port=settings.port).info("starting control API")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
