"""Small asyncio helpers shared by the primitives' lifecycles (private)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` (nothing when ``None``) and wait until it has ended.

    Its own ``CancelledError`` is not raised here: a ``close()`` that stops a
    background task goes on with the rest of its work.
    """
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
