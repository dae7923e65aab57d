"""One compact JSON line per log record, the format both services write when not on a terminal.

Pure: turns a loguru record (a mapping) into text; the services' logging modules own the sinks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

_ENCODER = msgspec.json.Encoder()


def json_line(record: Mapping[str, Any]) -> str:
    """`{"ts", "level", "message", **extra, "exception"?}` on one line; other values become str."""
    line: dict[str, Any] = {
        "ts": record["time"].isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
    }
    line.update(record["extra"])
    exception = record.get("exception")
    if exception is not None and exception.type is not None:
        line["exception"] = f"{exception.type.__name__}: {exception.value}"
    return _ENCODER.encode(_jsonable(line)).decode() + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
