"""Running sibling tasks until the first one ends, with a stop (cancellation) that always gets through.

Python 3.11's `asyncio.TaskGroup` raises a child's error instead of the parent's `CancelledError` when both
happen at once, and leaves the parent's cancel count raised, so `except*` around it can swallow a stop: a socket
that reconnects forever, a worker that never exits. Python 3.12 fixed it; until then, this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from loguru import logger

# A task still running this long after its cancel swallowed it (a library's 3.11 `wait_for` can): cancel it again.
RECANCEL_SECONDS = 5.0


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
        await cancel_and_wait(tasks)


async def cancel_and_wait(tasks: list[asyncio.Task[Any]], recancel: float = RECANCEL_SECONDS) -> None:
    """Cancel the tasks and wait until every one has ended, cancelling again any that is still running after
    `recancel` seconds: one cancel that a task swallowed must not leave its owner waiting forever."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recancel)
        for task in pending:
            logger.bind(task=task.get_name()).warning("task still running after its cancel; cancelling it again")
    for task in tasks:  # retrieve every outcome, so none is reported as never retrieved
        if not task.cancelled():
            task.exception()


async def wait_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until `event` is set or `timeout` seconds pass; True if it was set.

    Python 3.11's `asyncio.wait_for(event.wait(), timeout)` returns normally when a cancel arrives in the same loop
    turn as the event is set, swallowing the cancel: a loop around it then runs on after its owner asked it to
    stop, and a worker's shutdown waits for it forever. `asyncio.timeout` counts cancels and lets them through.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
