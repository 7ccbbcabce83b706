"""``fokha demo``: every primitive at work on embedded defaults, on 127.0.0.1 only.

Each primitive contributes one section (a module here with an ``async def run(ctx)``)
and one line in :data:`SECTIONS`. A section prints what it does through
``ctx.say`` and raises if what it shows did not happen, so the demo is also a
smoke test (``tests/test_cli.py`` runs it).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable, Sequence

from . import bridge, dedup, health, queue, resilience, ws

__all__ = ["SECTIONS", "DemoContext", "run_demo"]


class DemoContext:
    """What a section gets: ``say`` to print an indented line of the account."""

    def __init__(self) -> None:
        self.lines = 0

    def say(self, text: str) -> None:
        """Print one line of the account."""
        self.lines += 1
        print(f"   {text}", flush=True)


Section = Callable[[DemoContext], Awaitable[None]]

SECTIONS: list[tuple[str, Section]] = [
    ("resilience", resilience.run),
    ("dedup", dedup.run),
    ("ws", ws.run),
    ("health", health.run),
    ("bridge", bridge.run),
    ("queue", queue.run),
]


async def run_demo(*, only: Sequence[str] | None = None) -> int:
    """Run the sections (all, or those named in ``only``); 0 when all succeeded."""
    known = {name for name, _ in SECTIONS}
    unknown = sorted(set(only or ()) - known)
    if unknown:
        print(f"unknown demo section(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return 2
    failed = []
    print("fokha demo: the library at work on embedded defaults (127.0.0.1 only)\n")
    for name, section in SECTIONS:
        if only and name not in only:
            continue
        print(f"== {name}")
        ctx = DemoContext()
        started = time.perf_counter()
        try:
            await section(ctx)
        except Exception:
            failed.append(name)
            print(f"   FAILED:\n{traceback.format_exc()}")
        else:
            print(f"   ok ({time.perf_counter() - started:.2f}s)\n")
    if failed:
        print(f"demo finished with failures in: {', '.join(failed)}")
        return 1
    print("demo finished: every section did what it said.")
    return 0
