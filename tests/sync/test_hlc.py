"""Hybrid logical clock: order, monotonicity, restarts, the max-offset guard."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fokha_integration.errors import ConfigError, ValidationError
from fokha_integration.sync import ClockSkewError, HybridClock, Timestamp, parse_version


class Wall:
    """A settable wall clock in seconds."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_encoding_sorts_like_the_tuple() -> None:
    """The wire string order equals the (wall, counter, node) order."""
    a = Timestamp(1, 99, "z")
    b = Timestamp(2, 0, "a")
    c = Timestamp(2, 0, "b")
    assert a.encode() < b.encode() < c.encode()
    assert parse_version(b.encode()) == b


@given(
    st.lists(
        st.tuples(st.integers(0, 10**14), st.integers(0, 99_999), st.sampled_from("abc")),
        min_size=2,
    )
)
def test_string_order_is_tuple_order(items: list[tuple[int, int, str]]) -> None:
    """Sorting encoded versions sorts the timestamps."""
    stamps = [Timestamp(*i) for i in items]
    assert sorted(s.encode() for s in stamps) == [s.encode() for s in sorted(stamps)]


def test_now_is_monotonic_when_the_host_clock_steps_back() -> None:
    """A backwards step of the wall clock never reorders versions."""
    wall = Wall()
    clock = HybridClock("n1", wall=wall)
    first = clock.now()
    wall.t -= 3600
    second = clock.now()
    third = clock.now()
    assert first < second < third
    assert second.wall_ms == first.wall_ms


def test_monotonic_across_restart() -> None:
    """A clock restored from its persisted last value issues only later versions."""
    wall = Wall()
    clock = HybridClock("n1", wall=wall)
    for _ in range(5):
        last = clock.now()
    wall.t -= 10  # the host restarts with its clock behind
    restored = HybridClock("n1", wall=wall, last=clock.last.encode())
    assert restored.now() > last


def test_far_future_remote_is_refused_and_counted() -> None:
    """A remote version beyond max_offset raises ClockSkewError and leaves the clock alone."""
    wall = Wall()
    clock = HybridClock("n1", wall=wall, max_offset=60)
    before = clock.now()
    far = Timestamp(int((wall.t + 3600) * 1000), 0, "evil")
    with pytest.raises(ClockSkewError) as info:
        clock.observe(far)
    assert info.value.field == "version"
    assert clock.refused == 1
    assert clock.now().wall_ms < far.wall_ms
    assert clock.last > before


def test_observe_moves_past_the_remote() -> None:
    """After observing a (near) remote version, the next local version is above it."""
    wall = Wall()
    clock = HybridClock("n1", wall=wall)
    remote = Timestamp(int(wall.t * 1000) + 5000, 7, "n2")
    clock.observe(remote)
    assert clock.now() > remote


@given(st.lists(st.one_of(st.just(None), st.integers(-5000, 5000)), max_size=60))
def test_property_every_event_is_later(ops: list[int | None]) -> None:
    """Local events and receives (within the offset) always move the clock forward."""
    wall = Wall()
    clock = HybridClock("a", wall=wall)
    last = clock.now()
    for op in ops:
        wall.t += 0.001
        if op is None:
            nxt = clock.now()
        else:
            nxt = clock.observe(Timestamp(int(wall.t * 1000) + op, 3, "b"))
        assert nxt > last
        last = nxt


def test_bad_settings_and_versions() -> None:
    """Bad node ids, offsets and version strings are refused naming the field."""
    with pytest.raises(ConfigError):
        HybridClock("bad node!")
    with pytest.raises(ConfigError):
        HybridClock("n", max_offset=float("nan"))
    with pytest.raises(ValidationError) as info:
        parse_version("12-3-x", "mutations[0].version")
    assert info.value.field == "mutations[0].version"
