"""Entry point of `ws-gateway-api`: read settings, configure logging, serve the API until signalled."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

import uvicorn
from loguru import logger

from control_api.app import create_app
from control_api.settings import ApiSettings
from shared import preflight
from shared.config import ConfigError
from shared.logformat import configure_logging

GRACE_SECONDS = 10


class _Server(uvicorn.Server):
    """uvicorn's server, but a SIGTERM/SIGINT is a request to stop cleanly and exit 0.

    uvicorn re-raises the captured signal after its graceful shutdown, so the process would die of SIGTERM
    (exit -15) even though it finished every in-flight request; orchestrators read that as a crash.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {signum: signal.signal(signum, self._stop) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _stop(self, signum: int, _: object) -> None:
        logger.bind(signal=signal.Signals(signum).name).info("stopping: finishing in-flight requests")
        self.should_exit = True


def main(argv: list[str] | None = None) -> None:
    options = preflight.arguments(
        "ws-gateway-api",
        "The control API: subscriptions, balances, health and the status page. "
        "Configured by environment variables only (see env.example).",
        argv,
    )
    try:
        settings = ApiSettings.from_env(os.environ)
    except ConfigError as error:
        print(f"ws-gateway-api: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2 if not options.check_config else 1) from None
    if options.check_config:
        raise SystemExit(preflight.check("ws-gateway-api", settings.database_url, settings.rabbitmq_url))
    configure_logging("control_api", settings.log_level, settings.log_format)
    logger.bind(host=settings.host, port=settings.port).info("starting control API")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
        loop="uvloop" if settings.uvloop else "asyncio",
    )
    try:
        _Server(config).run()
    except Exception:  # noqa: BLE001 - the last word of a crashing process: log it, then exit 1
        logger.opt(exception=True).critical("control API crashed")
        raise SystemExit(1) from None
    logger.info("control API stopped")


if __name__ == "__main__":
    main()
