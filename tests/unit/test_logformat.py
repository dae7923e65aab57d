"""Both services log one format: library records from the standard `logging` module come out as our JSON lines,
and an exception keeps its type, message and stack frames as a field."""

from __future__ import annotations

import io
import json
import logging

from loguru import logger

from shared.logformat import configure_logging


def test_a_library_record_and_an_exception_become_json_lines_with_the_stack() -> None:
    stream = io.StringIO()
    try:
        configure_logging("test_service", "info", "json", stream)
        logging.getLogger("uvicorn.error").warning("library says %s", "hello")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it broke")
    finally:
        logger.remove()
        logging.basicConfig(handlers=[], force=True)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["message"], first["logger"], first["service"]) == (
        "library says hello",
        "uvicorn.error",
        "test_service",
    )
    assert second["exception"]["type"] == "ValueError"
    assert second["exception"]["message"] == "boom"
    assert (
        second["exception"]["frames"][-1]["function"]
        == "test_a_library_record_and_an_exception_become_json_lines_with_the_stack"
    )
