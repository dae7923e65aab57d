"""Running sibling tasks until the first one ends, with a stop (cancellation) that always gets through.

Python 3.11's `asyncio.TaskGroup` raises a child's error instead of the parent's `CancelledError` when both
happen at once, and leaves the parent's cancel count raised, so `except*` around it can swallow a stop: a socket
that reconnects forever, a worker that never exits. Python 3.12 fixed it; until then, this. Likewise 3.11's
`asyncio.wait_for` returns the awaited result instead of raising when a cancel lands as that result arrives
(an event set in the same loop iteration as the stop): a wake-or-timeout loop then waits on, and its owner's
shutdown hangs; `wait_event` is the wait that lets the cancel through.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


async def until_first_ends(coroutines: dict[str, Coroutine[Any, Any, object]]) -> BaseException | None:
    """Run each coroutine as a task (named by its key) until one ends; cancel and await the others.

    Returns what the first one to end raised, or None if it returned. A cancellation of the caller cancels every
    task, waits for them, and propagates.
    """
    tasks = [asyncio.create_task(coroutine, name=name) for name, coroutine in coroutines.items()]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = next(task for task in tasks if task in done)  # the earliest-listed of those that ended together
        return first.exception()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_event(event: asyncio.Event, timeout: float | None) -> None:
    """Wait until `event` is set or `timeout` seconds pass (None: no limit); a cancellation always propagates."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
