"""Entry point of `ws-gateway-worker`: read settings, configure logging, run the worker until signalled."""

from __future__ import annotations

import signal


def _stop_before_starting(_signum: int, _frame: object) -> None:
    # Nothing runs yet, so nothing needs draining: stopping now is a clean stop. Imports take seconds on a busy
    # machine, and an orchestrator that stops a worker then must not see it die of the signal (exit -15).
    raise SystemExit(0)


# Installed before the heavy imports below; `serve` replaces it with the event loop's handler.
signal.signal(signal.SIGTERM, _stop_before_starting)

import asyncio  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402

from loguru import logger  # noqa: E402

from shared import preflight  # noqa: E402
from shared.config import ConfigError, redact_url  # noqa: E402
from shared.logformat import configure_logging  # noqa: E402
from stream_worker.broker.publisher import Publisher  # noqa: E402
from stream_worker.cluster.identity import DuplicateWorkerId  # noqa: E402
from stream_worker.exchange.connection import ConnectionSettings  # noqa: E402
from stream_worker.settings import WorkerSettings  # noqa: E402
from stream_worker.state.persistence import Store, create_engine  # noqa: E402
from stream_worker.worker import Worker  # noqa: E402

DB_TIMEOUT = 5.0


async def serve(settings: WorkerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    logger.bind(event_loop=type(loop).__module__.split(".")[0]).info("event loop running")
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    engine = create_engine(settings.database_url, DB_TIMEOUT)
    try:
        worker = Worker(
            settings,
            store=Store(engine, DB_TIMEOUT),
            publisher=Publisher(
                settings.rabbitmq_url,
                reconnect_cap=settings.reconnect_cap,
                market_queue_max_length=settings.market_queue_max_length,
                publish_path=settings.publish_path,
                coalesce=settings.publish_coalesce,
            ),
            connection_settings=ConnectionSettings(
                backoff_cap=settings.reconnect_cap,
                max_frame_bytes=settings.max_frame_bytes,
                compression=settings.compression,
            ),
        )
        await worker.run(stop)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    options = preflight.arguments(
        "ws-gateway-worker",
        "The stream worker: holds the Bybit sockets and publishes events to RabbitMQ. "
        "Configured by environment variables only (see env.example).",
        argv,
    )
    try:
        settings = WorkerSettings.from_env(os.environ, hostname=socket.gethostname())
    except ConfigError as error:
        print(f"ws-gateway-worker: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2 if not options.check_config else 1) from None
    if options.check_config:
        raise SystemExit(preflight.check("ws-gateway-worker", settings.database_url, settings.rabbitmq_url))
    configure_logging("stream_worker", settings.log_level, settings.log_format)
    if not settings.has_credentials:
        logger.info("no BYBIT_API_KEY/BYBIT_API_SECRET: serving public market data only")
    logger.bind(
        worker_id=settings.worker_id,
        environment=settings.bybit_environment,
        public_ws=settings.public_ws_url,
        private_ws=settings.private_ws_url,
        database=redact_url(settings.database_url),
        rabbitmq=redact_url(settings.rabbitmq_url),
    ).info("starting stream worker")
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.uvloop)) as runner:
            runner.run(serve(settings))
    except DuplicateWorkerId as error:
        logger.bind(worker_id=settings.worker_id).critical(str(error))  # one line: the fix is in the message
        raise SystemExit(3) from None
    except Exception:  # noqa: BLE001 - the last word of a crashing process: log it, then exit 1
        logger.opt(exception=True).critical("stream worker crashed")
        raise SystemExit(1) from None
    logger.info("stream worker stopped")


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        return None
    import uvloop

    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
