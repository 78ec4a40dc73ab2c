"""Waits on the cluster source's event loop that a stop cuts short.

A worker's stop sets an ``asyncio.Event``; every wait on the loop (a connection nats-py retries
for ever, a pause before trying again) must end when it is set, or a stop waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

CANCEL_AGAIN_S = 0.1  # how long a cancelled work has to end before it is cancelled again


async def unless(event: asyncio.Event, work: Any) -> Any:
    """``await work``, or None (``work`` cancelled) once ``event`` is set first. Cancelled itself, it
    cancels ``work`` too: left running, a connect that tries for ever outlived its caller (a review)."""
    task, stopped = asyncio.ensure_future(work), asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    while not task.done():  # a cancel the work swallowed is sent again: nats-py's connect, cancelled while it
        await asyncio.wait({task}, timeout=CANCEL_AGAIN_S)  # closed a failed try, went on trying for ever
        task.cancel()  # and a stop at a worker's start waited out its join timeout (a mutation audit)
    with contextlib.suppress(BaseException):
        await task
    return None


async def pause(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``event`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
