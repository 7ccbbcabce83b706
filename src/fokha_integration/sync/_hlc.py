"""Hybrid logical clocks (Kulkarni et al., OPODIS 2014) with a max-offset guard.

A version is ``(wall_ms, counter, node)``, written on the wire as one string
``"<wall_ms: 15 digits>-<counter: 5 digits>-<node>"``. The fixed-width fields make
the plain string order equal to the tuple order, so every replica (and every SQL
``ORDER BY``) picks the same last writer without parsing.

:class:`HybridClock` is deterministic given its wall source: ``now()`` for a local
event, ``observe(remote)`` for a received version. A remote version more than
``max_offset`` seconds ahead of the local wall clock is refused with
:class:`ClockSkewError` (and counted), so one far-future timestamp cannot ratchet
every clock forward for good (yugabyte #10628). The clock never goes backwards,
even when the host clock steps back; its last value is persisted by the stores in
the same transaction as the writes it stamped, and passed back as ``last`` on
restart.

Not a wall clock: ``wall_ms`` may run ahead of real time by up to ``max_offset``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import _validate
from ..errors import ConfigError, ValidationError

__all__ = ["ClockSkewError", "HybridClock", "Timestamp", "parse_version"]

_COUNTER_MAX = 99_999
_NODE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_VERSION_RE = re.compile(r"(\d{15})-(\d{5})-([A-Za-z0-9_.:-]{1,64})")


class ClockSkewError(ValidationError):
    """A remote version is further ahead of the local clock than ``max_offset`` allows."""

    def __init__(self, version: str, ahead_ms: int, max_offset_ms: int) -> None:
        self.ahead_ms = ahead_ms
        self.max_offset_ms = max_offset_ms
        super().__init__(
            "version",
            f"{ahead_ms} ms ahead of this clock (max_offset {max_offset_ms} ms)",
            version,
        )


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    """One HLC value; ordered as ``(wall_ms, counter, node)``."""

    wall_ms: int
    counter: int
    node: str

    def encode(self) -> str:
        """The wire form (sorts like the tuple)."""
        return f"{self.wall_ms:015d}-{self.counter:05d}-{self.node}"

    def __str__(self) -> str:
        return self.encode()


def parse_version(text: object, field: str = "version") -> Timestamp:
    """A :class:`Timestamp` from its wire form; :class:`ValidationError` naming ``field``."""
    if not isinstance(text, str):
        raise ValidationError(field, "must be a version string", text)
    match = _VERSION_RE.fullmatch(text)
    if match is None:
        raise ValidationError(field, "must look like 001732950000000-00000-node", text)
    return Timestamp(int(match.group(1)), int(match.group(2)), match.group(3))


def _check_node(node_id: object) -> str:
    value = _validate.string("node_id", node_id)
    if not _NODE_RE.fullmatch(value):
        raise ConfigError("node_id", "must be 1-64 of [A-Za-z0-9_.:-]", value)
    return value


class HybridClock:
    """A hybrid logical clock for one node (see the module docstring).

    ``wall`` returns seconds since the epoch (default :func:`time.time`); ``last``
    is the persisted last value, so a restarted node never issues a version at or
    below one it issued before.
    """

    def __init__(
        self,
        node_id: str,
        *,
        max_offset: float = 60.0,
        wall: Callable[[], float] = time.time,
        last: Timestamp | str | None = None,
    ) -> None:
        self.node_id = _check_node(node_id)
        self.max_offset_ms = int(
            _validate.number("max_offset", max_offset, exclusive_minimum=0.0) * 1000
        )
        self._wall = wall
        if isinstance(last, str):
            last = parse_version(last, "last")
        self._l = last.wall_ms if last is not None else 0
        self._c = last.counter if last is not None else 0
        self.refused = 0
        """How many remote versions were refused for clock skew."""

    def _physical_ms(self) -> int:
        return int(self._wall() * 1000)

    @property
    def last(self) -> Timestamp:
        """The last value issued or observed (what a store persists)."""
        return Timestamp(self._l, self._c, self.node_id)

    def _bump(self, wall_ms: int, counter: int) -> Timestamp:
        if counter > _COUNTER_MAX:
            # The counter is full: borrow one millisecond (still ahead, still ordered).
            wall_ms, counter = wall_ms + 1, 0
        self._l, self._c = wall_ms, counter
        return Timestamp(wall_ms, counter, self.node_id)

    def now(self) -> Timestamp:
        """A new version for a local event, greater than every one before it."""
        pt = self._physical_ms()
        if pt > self._l:
            return self._bump(pt, 0)
        return self._bump(self._l, self._c + 1)

    def check(self, remote: Timestamp) -> None:
        """Refuse ``remote`` (:class:`ClockSkewError`, counted) if it is too far ahead."""
        ahead = remote.wall_ms - self._physical_ms()
        if ahead > self.max_offset_ms:
            self.refused += 1
            raise ClockSkewError(remote.encode(), ahead, self.max_offset_ms)

    def observe(self, remote: Timestamp) -> Timestamp:
        """Merge a received version; the clock's new value (after :meth:`check`)."""
        self.check(remote)
        pt = self._physical_ms()
        top = max(self._l, remote.wall_ms, pt)
        if top == self._l and top == remote.wall_ms:
            counter = max(self._c, remote.counter) + 1
        elif top == self._l:
            counter = self._c + 1
        elif top == remote.wall_ms:
            counter = remote.counter + 1
        else:
            counter = 0
        return self._bump(top, counter)
