"""Runs a FakeBybit on its own event loop in a background thread, for synchronous clients (pybit).

The thread is owned by the `with` block: leaving it stops the server, the loop and joins the thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from tests.fake_bybit.server import FakeBybit

T = TypeVar("T")


class FakeBybitThread:
    """`with FakeBybitThread(accounts=...) as running:` then `running.url`, `running.call(hook(...))`."""

    def __init__(self, **fake_options: Any) -> None:
        self.fake = FakeBybit(**fake_options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-bybit", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        self.call(self.fake.start())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.call(self.fake.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
        if exc_type is None:
            self.fake.raise_if_broken()

    @property
    def url(self) -> str:
        return self.fake.url

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine (a FakeBybit hook) on the fake's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0) -> None:
        """Poll `predicate` on the fake's loop (so it reads the fake's state safely) until true."""
        self.call(self.fake.wait_for(predicate, timeout), timeout + 1.0)
