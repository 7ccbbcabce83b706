"""RetryPolicy: attempts, jitter bounds, deadline, retry-after, predicates, test mode."""

from __future__ import annotations

import asyncio
import random

import pytest

from fokha_integration import ManualClock
from fokha_integration.errors import CircuitOpenError, ConfigError, RetryExhaustedError
from fokha_integration.resilience import RetryDetails, RetryPolicy, retry_testing
from fokha_integration.resilience._retry import parse_retry_after


class Transient(Exception):
    pass


class HttpError(Exception):
    def __init__(self, status: int, retry_after: float | None = None) -> None:
        self.status = status
        self.retry_after = retry_after


class Flaky:
    """Fails ``n`` times with ``exc``, then returns ``"done"``."""

    def __init__(self, n: int, exc: BaseException | None = None) -> None:
        self.n = n
        self.calls = 0
        self.exc = exc if exc is not None else Transient()

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.n:
            raise self.exc
        return "done"


async def drive(clock: ManualClock, coro: object) -> object:
    """Run ``coro`` to completion, advancing the manual clock whenever it sleeps."""
    task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
    while not task.done():
        await clock.run_until_idle()
        await asyncio.sleep(0)
    return task.result()


async def test_retries_until_success_and_reports_each_wait() -> None:
    """A transient failure is retried; hooks see every attempt's delay."""
    clock = ManualClock()
    seen: list[RetryDetails] = []
    policy = RetryPolicy(
        attempts=5, initial=1, multiplier=2, jitter="none", clock=clock, hooks=(seen.append,)
    )
    flaky = Flaky(3)
    assert await drive(clock, policy.call(flaky)) == "done"
    assert flaky.calls == 4
    assert [d.delay for d in seen] == [1, 2, 4]
    assert [d.attempt for d in seen] == [1, 2, 3]
    assert clock.monotonic() == 7


async def test_attempts_exhausted_reraises_last_exception() -> None:
    """After `attempts` tries the last exception itself propagates."""
    clock = ManualClock()
    policy = RetryPolicy(attempts=3, initial=0.1, clock=clock)
    flaky = Flaky(10)
    with pytest.raises(Transient):
        await drive(clock, policy.call(flaky))
    assert flaky.calls == 3


async def test_full_jitter_stays_within_bounds() -> None:
    """Each jittered delay lies in [0, min(cap, initial*multiplier**n)]."""
    clock = ManualClock()
    seen: list[RetryDetails] = []
    policy = RetryPolicy(
        attempts=8,
        initial=0.5,
        multiplier=3,
        max_delay=4,
        deadline=None,
        clock=clock,
        rng=random.Random(7),
        hooks=(seen.append,),
    )
    with pytest.raises(Transient):
        await drive(clock, policy.call(Flaky(100)))
    caps = [min(4.0, 0.5 * 3**n) for n in range(7)]
    assert len(seen) == 7
    for d, cap in zip(seen, caps):
        assert 0 <= d.delay <= cap
    assert len({d.delay for d in seen}) > 1  # it is actually random


async def test_deadline_stops_before_overrunning() -> None:
    """When the next wait would pass the deadline, RetryExhaustedError is raised at once."""
    clock = ManualClock()
    policy = RetryPolicy(
        attempts=50, initial=1, multiplier=2, jitter="none", deadline=10, clock=clock
    )
    flaky = Flaky(100)
    with pytest.raises(RetryExhaustedError) as info:
        await drive(clock, policy.call(flaky))
    # waits 1 + 2 + 4 = 7; the next wait (8) would end at 15 > 10
    assert clock.monotonic() == 7
    assert info.value.attempts == 4
    assert isinstance(info.value.__cause__, Transient)
    assert info.value.last_exception is info.value.__cause__


async def test_retry_after_is_honoured() -> None:
    """An exception's retry_after replaces the computed delay."""
    clock = ManualClock()
    seen: list[RetryDetails] = []
    policy = RetryPolicy(attempts=3, initial=0.01, jitter="none", clock=clock, hooks=(seen.append,))
    flaky = Flaky(1, HttpError(429, retry_after=3.5))
    assert await drive(clock, policy.call(flaky)) == "done"
    assert [d.delay for d in seen] == [3.5]
    assert clock.monotonic() == 3.5


async def test_retry_after_header_from_http_error() -> None:
    """A Retry-After header on the exception (as aiohttp gives) is honoured."""

    class ResponseError(Exception):
        status = 503
        headers = {"Retry-After": "2"}

    clock = ManualClock()
    seen: list[RetryDetails] = []
    policy = RetryPolicy(attempts=2, clock=clock, hooks=(seen.append,))
    with pytest.raises(ResponseError):
        await drive(clock, policy.call(Flaky(5, ResponseError())))
    assert [d.delay for d in seen] == [2.0]


async def test_too_long_retry_after_gives_up() -> None:
    """A retry_after above max_retry_after is not waited on: the error surfaces."""
    clock = ManualClock()
    policy = RetryPolicy(attempts=5, max_retry_after=60, clock=clock)
    flaky = Flaky(1, HttpError(503, retry_after=600))
    with pytest.raises(HttpError):
        await policy.call(flaky)
    assert flaky.calls == 1


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (HttpError(503), True),
        (HttpError(429), True),
        (HttpError(404), False),
        (HttpError(400), False),
        (ValueError("bad input"), False),
        (CircuitOpenError("b", "open", 1.0), False),
        (Transient(), True),
    ],
)
async def test_non_retryable_errors_raise_at_once(exc: Exception, retried: bool) -> None:
    """Statuses outside retry_statuses, other types and CircuitOpenError are not retried."""
    clock = ManualClock()
    policy = RetryPolicy(attempts=2, initial=0, retry_on=(Transient, HttpError), clock=clock)
    flaky = Flaky(1, exc)
    if retried:
        assert await drive(clock, policy.call(flaky)) == "done"
        assert flaky.calls == 2
    else:
        with pytest.raises(type(exc)):
            await policy.call(flaky)
        assert flaky.calls == 1


async def test_predicate_retry_on() -> None:
    """retry_on may be a predicate."""
    clock = ManualClock()
    policy = RetryPolicy(attempts=3, initial=0, clock=clock, retry_on=lambda e: "again" in str(e))
    assert await drive(clock, policy.call(Flaky(2, RuntimeError("again")))) == "done"
    with pytest.raises(RuntimeError):
        await policy.call(Flaky(2, RuntimeError("fatal")))


async def test_concurrent_calls_share_one_policy_safely() -> None:
    """Many coroutines using one policy each get their own attempt count."""
    clock = ManualClock()
    policy = RetryPolicy(attempts=4, initial=1, jitter="none", clock=clock)
    flakies = [Flaky(i % 4) for i in range(20)]

    async def run_all() -> list[object]:
        return list(await asyncio.gather(*(policy.call(f) for f in flakies)))

    assert await drive(clock, run_all()) == ["done"] * 20
    assert [f.calls for f in flakies] == [i % 4 + 1 for i in range(20)]


async def test_decorator() -> None:
    """A decorated coroutine function retries per the policy."""
    clock = ManualClock()
    policy = RetryPolicy(attempts=3, initial=0, clock=clock)
    flaky = Flaky(2)

    @policy
    async def op() -> str:
        return await flaky()

    assert await drive(clock, op()) == "done"


async def test_testing_mode_removes_waits_and_caps_attempts() -> None:
    """retry_testing(): no waiting on a real clock, and attempts capped."""
    policy = RetryPolicy(attempts=10, initial=60, max_delay=60)  # the real clock
    with retry_testing():
        flaky = Flaky(3)
        assert await asyncio.wait_for(policy.call(flaky), 5) == "done"
    with retry_testing(attempts=1):
        flaky = Flaky(1)
        with pytest.raises(Transient):
            await policy.call(flaky)
        assert flaky.calls == 1


async def test_hook_errors_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises is logged; the retry goes on."""

    def bad(_: RetryDetails) -> None:
        raise RuntimeError("hook bug")

    clock = ManualClock()
    policy = RetryPolicy(attempts=2, initial=0, clock=clock, hooks=(bad,))
    assert await drive(clock, policy.call(Flaky(1))) == "done"
    assert "hook" in caplog.text


def test_config_validation() -> None:
    """Bad settings are refused naming the field."""
    with pytest.raises(ConfigError) as info:
        RetryPolicy(attempts=0)
    assert info.value.field == "attempts"
    with pytest.raises(ConfigError):
        RetryPolicy(jitter="equal")
    with pytest.raises(ConfigError):
        RetryPolicy(multiplier=0.5)


def test_parse_retry_after_forms() -> None:
    """Retry-After as seconds or an HTTP-date; garbage gives None."""
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


async def test_attempt_timeout_bounds_each_attempt() -> None:
    """A hung attempt is cut off by attempt_timeout and retried; the next one succeeds."""
    calls = 0
    never = asyncio.Event()

    async def first_hangs() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await never.wait()
        return "done"

    policy = RetryPolicy(attempts=2, initial=0, attempt_timeout=0.05)
    assert await asyncio.wait_for(policy.call(first_hangs), 5) == "done"
    assert calls == 2


def test_jittered_delays_draw_each_wait_from_zero_to_the_backoff_value() -> None:
    """jittered_delays() follows delays(): unchanged with jitter="none", and with full
    jitter each wait lies in [0, the backoff value], repeatable from a seeded rng."""
    policy = RetryPolicy(initial=0.5, multiplier=2.0, max_delay=4.0)
    bases = [d for _, d in zip(range(6), policy.delays(), strict=False)]
    plain = RetryPolicy(initial=0.5, multiplier=2.0, max_delay=4.0, jitter="none")
    assert [d for _, d in zip(range(6), plain.jittered_delays(), strict=False)] == bases
    first = [d for _, d in zip(range(6), policy.jittered_delays(random.Random(7)), strict=False)]
    again = [d for _, d in zip(range(6), policy.jittered_delays(random.Random(7)), strict=False)]
    assert first == again
    assert all(0.0 <= d <= b for d, b in zip(first, bases, strict=True))
    assert first != bases


async def test_resume_carries_on_after_a_first_attempt_made_elsewhere() -> None:
    """resume(): the retries call() would make after that first failure, the deadline
    counted from ``started``; a failure not to be retried is re-raised as it is."""
    clock = ManualClock()
    seen: list[RetryDetails] = []
    policy = RetryPolicy(
        attempts=4, initial=1, multiplier=2, jitter="none", clock=clock, hooks=(seen.append,)
    )
    flaky = Flaky(2)
    first = Transient()
    flaky.calls = 1  # the caller's own first attempt, which raised ``first``
    assert await drive(clock, policy.resume(first, clock.monotonic(), flaky)) == "done"
    assert flaky.calls == 3  # two more attempts after the caller's
    assert [(d.attempt, d.delay) for d in seen] == [(1, 1), (2, 2)]
    assert seen[0].exception is first

    late = RetryPolicy(attempts=9, initial=1, jitter="none", deadline=10, clock=clock)
    started = clock.monotonic() - 9.5  # the first attempt began 9.5 s ago: no wait fits
    with pytest.raises(RetryExhaustedError) as info:
        await drive(clock, late.resume(Transient(), started, Flaky(0)))
    assert info.value.attempts == 1

    fatal = ValueError("not retried")
    never = Flaky(0)
    strict = RetryPolicy(retry_on=(Transient,), clock=clock)
    with pytest.raises(ValueError) as raised:
        await drive(clock, strict.resume(fatal, clock.monotonic(), never))
    assert raised.value is fatal and never.calls == 0
