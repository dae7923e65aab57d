"""The stream worker's errors: one hierarchy rooted in `WorkerError`, each carrying what a person needs to act.

Library exceptions (aiormq, websockets, asyncpg) are translated into these where the library is called, with
`raise ... from exc`; code further in catches only these classes.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Root of every error stream_worker raises on purpose."""


class TopologyError(WorkerError):
    """RabbitMQ refused to declare, bind or unbind one of our queues (e.g. it exists with other arguments)."""

    def __init__(self, queue: str, reason: str) -> None:
        super().__init__(f"RabbitMQ queue {queue!r}: {reason}")
        self.queue, self.reason = queue, reason


class BrokerUnavailable(WorkerError):
    """RabbitMQ could not be reached, or the link to it broke, within the configured timeout."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"RabbitMQ unavailable: {reason}")
        self.reason = reason
