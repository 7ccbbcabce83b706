"""Small asyncio helpers shared by the primitives' lifecycles (private)."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` (nothing when ``None``) and wait until it has ended.

    Its own cancellation is not raised here, so a ``close()`` that stops a background
    task goes on with the rest of its work; an error the task ended with is. If the
    caller itself is cancelled while waiting, that cancellation propagates (the
    ``suppress(CancelledError)`` idiom would swallow it).
    """
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        error = task.exception()
        if error is not None:
            raise error
