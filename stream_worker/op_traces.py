"""Which change notice asked for each topic's last op, so the ack that arrives later is logged under it."""

from __future__ import annotations

from typing import Any

from loguru import logger

from shared.enums import Endpoint


class OpTraces:
    def __init__(self) -> None:
        self._traces: dict[tuple[Endpoint, str], str] = {}

    def log(self, endpoint: Endpoint, topic: str, trace_id: str | None = None) -> Any:
        """A logger for one topic's op. With `trace_id` (the notice's), remember it for the ack; without, use
        the remembered one: the ack arrives on the socket's own task, long after the notice was handled."""
        key = (endpoint, topic)
        if trace_id is not None:
            self._traces[key] = trace_id
        bound = logger.bind(endpoint=endpoint.value, topic=topic)
        remembered = self._traces.get(key)
        return bound.bind(trace_id=remembered) if remembered is not None else bound
