"""Log configuration for the worker process: loguru, JSON lines off a terminal, pretty on one.

Called once by the entry point; `diagnose=False` always, because tracebacks with variable values could print
the Bybit secret.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from loguru import logger

from shared.logformat import json_line

if TYPE_CHECKING:
    from loguru import Message

PRETTY_FORMAT = "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message} <dim>{extra}</dim>"


def configure_logging(level: str, fmt: str, stream: TextIO | None = None) -> None:
    sink = stream or sys.stderr
    logger.remove()
    logger.configure(extra={"service": "stream_worker", "trace_id": None})
    if fmt == "json" or (fmt == "auto" and not sink.isatty()):

        def write(message: Message) -> None:
            sink.write(json_line(message.record))

        logger.add(write, level=level.upper(), diagnose=False, backtrace=False, format="{message}")
    else:
        logger.add(sink, level=level.upper(), diagnose=False, backtrace=False, format=PRETTY_FORMAT)
