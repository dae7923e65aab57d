"""How both services (and `alembic`) log: loguru, one JSON object per line off a terminal, pretty on one.

`json_line` is pure. `configure_logging` is called once by an entry point (never at import): it replaces
loguru's sinks and routes the standard `logging` module into loguru, so what aiormq, aio-pika, websockets,
uvicorn, asyncpg, SQLAlchemy and alembic log comes out in the same format as our own lines. `diagnose=False`
always: tracebacks with variable values could print a secret.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

import msgspec
from loguru import logger

if TYPE_CHECKING:
    from loguru import Message

_ENCODER = msgspec.json.Encoder()
PRETTY_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[trace_id]}</cyan> {message} <dim>{extra}</dim>"
)
# Libraries that are chatty at INFO about things our own lines already say (every connection, every query).
QUIET_LIBRARIES = {"aiormq": logging.WARNING, "aio_pika": logging.WARNING, "websockets": logging.WARNING}


def json_line(record: Mapping[str, Any]) -> str:
    """`{"ts", "level", "message", "logger", **extra, "exception"?}` on one line; other values become str.

    An exception keeps its stack: `{"type", "message", "frames": [{"file", "line", "function"}, ...]}`."""
    line: dict[str, Any] = {
        "ts": record["time"].isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
    }
    line.update(record["extra"])
    exception = record.get("exception")
    if exception is not None and exception.type is not None:
        frames = traceback.extract_tb(exception.traceback) if exception.traceback is not None else []
        line["exception"] = {
            "type": exception.type.__name__,
            "message": str(exception.value),
            "frames": [{"file": f.filename, "line": f.lineno, "function": f.name} for f in frames],
        }
    return _ENCODER.encode(_jsonable(line)).decode() + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class InterceptHandler(logging.Handler):
    """Hands each standard-library log record to loguru, keeping its level, logger name and exception."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # `logger` names the library that logged; our own lines name the module.
        logger.patch(lambda r: r.update({"name": record.name})).opt(exception=record.exc_info).log(
            level, record.getMessage()
        )


def configure_logging(service: str, level: str, fmt: str, stream: TextIO | None = None) -> None:
    """`fmt`: json, pretty, or auto (JSON unless `stream` is a terminal)."""
    sink = stream or sys.stderr
    logger.remove()
    logger.configure(extra={"service": service, "trace_id": None})
    if fmt == "json" or (fmt == "auto" and not sink.isatty()):

        def write(message: Message) -> None:
            sink.write(json_line(message.record))

        logger.add(write, level=level.upper(), diagnose=False, backtrace=False, format="{message}")
    else:
        logger.add(sink, level=level.upper(), diagnose=False, backtrace=False, format=PRETTY_FORMAT)
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.getLevelName(level.upper()), force=True)
    for name, floor in QUIET_LIBRARIES.items():
        logging.getLogger(name).setLevel(max(floor, logging.getLevelName(level.upper())))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "sqlalchemy", "asyncpg"):
        library = logging.getLogger(name)
        library.handlers = []  # their own handlers would print a second, differently formatted line
        library.propagate = True
