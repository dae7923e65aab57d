"""Which writer the publisher uses: the fast path (`channel_writer`) or aiormq's public `basic_publish`.

`auto` (the default) takes the fast path when aiormq's internals have the shape it needs and a probe publish
is confirmed through it, and otherwise logs one warning and uses the public path for the life of the
process. `fast` insists (and fails the session loudly if the check fails); `public` never tries the fast path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import aiormq
from loguru import logger

from stream_worker.broker.channel_writer import ChannelWriter, fast_path_problem
from stream_worker.broker.public_writer import PublicWriter
from stream_worker.broker.stamping import Writer

PublishPath = Literal["auto", "fast", "public"]
PUBLISH_PATHS: tuple[PublishPath, ...] = ("auto", "fast", "public")


class FastPathUnavailable(RuntimeError):
    """`fast` was forced but aiormq does not support it: a configuration error, not a broker outage."""


class PathChooser:
    def __init__(
        self,
        path: PublishPath,
        *,
        exchange: str,
        content_type: str,
        timeout: float,
        check: Callable[[object], str | None] = fast_path_problem,
    ) -> None:
        if path not in PUBLISH_PATHS:
            raise ValueError(f"publish path {path!r} is not one of {PUBLISH_PATHS}")
        self._mode = path
        self._exchange = exchange
        self._content_type = content_type
        self._timeout = timeout
        self._check = check
        self._verified = False  # the fast path's probe succeeded once in this process
        self.chosen: str | None = "public" if path == "public" else None  # "fast" | "public" once known

    async def writers(self, market: aiormq.Channel, account: aiormq.Channel) -> tuple[Writer, Writer]:
        """The writers for this session's market and account channels (the account one has confirms)."""
        if self.chosen == "public":
            return self._public(market), self._public(account)
        fast_market = ChannelWriter(market, self._exchange, self._content_type)
        fast_account = ChannelWriter(account, self._exchange, self._content_type)
        problem = self._check(market) or self._check(account)
        if problem is None and not self._verified:
            problem = await fast_account.probe(self._timeout)  # a lost link raises: no verdict, next session
            self._verified = problem is None
        if problem is None:
            self.chosen = "fast"
            return fast_market, fast_account
        if self._mode == "fast":
            raise FastPathUnavailable(f"WS_GATEWAY_PUBLISH_PATH=fast, but {problem}")
        logger.bind(reason=problem).warning("aiormq's internals changed: publishing through its public API instead")
        self.chosen = "public"
        return self._public(market), self._public(account)

    def _public(self, channel: aiormq.Channel) -> PublicWriter:
        return PublicWriter(channel, self._exchange, self._content_type)
