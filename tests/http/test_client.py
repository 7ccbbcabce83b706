"""ApiClient against a real local aiohttp server: the retry matrix, Retry-After, faults, auth.

The matrix covers method x status x key present x Retry-After form; a POST or PATCH
without a key is sent exactly once in every cell.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from fokha_integration.clock import ManualClock
from fokha_integration.errors import CircuitOpenError, RateLimitedError, RetryExhaustedError
from fokha_integration.http._errors import (
    ApiConnectionError,
    ApiTimeoutError,
    HttpStatusError,
    IdempotencyConflictError,
    IdempotencyMismatchError,
)
from fokha_integration.http.client import ApiClient, ApiClientConfig
from fokha_integration.models import Envelope
from fokha_integration.resilience import BreakerConfig, RetryDetails, RetryPolicy, retry_testing
from tests.http.fault_server import FaultServer
from tests.support import timeout

METHODS = ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "POST", "PATCH"]
RETRY_STATUSES = [408, 425, 429, 500, 502, 503, 504]
OTHER_STATUSES = [400, 404, 409, 422]
FORMS = ["none", "seconds", "date"]
ATTEMPTS = 3


@pytest.fixture
async def server() -> AsyncIterator[FaultServer]:
    """A running fault server."""
    made = FaultServer()
    await made.start()
    yield made
    await made.close()


def _expected_hits(method: str, status: int, keyed: bool) -> int:
    safe = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS") or keyed
    retried = status in RETRY_STATUSES or (status == 409 and keyed)
    return ATTEMPTS if safe and retried else 1


def _cells() -> Iterator[tuple[str, int, bool, str]]:
    yield from itertools.product(METHODS, RETRY_STATUSES + OTHER_STATUSES, (False, True), FORMS)


async def _drive(clock: ManualClock, task: asyncio.Task[object], delays: list[float]) -> None:
    """Advance the manual clock by each wait the client asks for, until the call ends."""
    while not task.done():
        sleeper = asyncio.ensure_future(clock.wait_for_sleepers(1, timeout=timeout(10)))
        done, _ = await asyncio.wait({task, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        if sleeper in done and not task.done():
            clock.advance(delays[-1])
        sleeper.cancel()


async def test_retry_matrix(server: FaultServer) -> None:
    """Every cell: attempts as the spec table says, the same key on each, Retry-After obeyed."""
    failures = []
    for method, status, keyed, form in _cells():
        clock = ManualClock(wall=time.time())
        delays: list[float] = []

        def hook(details: RetryDetails, delays: list[float] = delays) -> None:
            delays.append(details.delay)

        policy = RetryPolicy(attempts=ATTEMPTS, initial=0.2, deadline=60, hooks=(hook,))
        client = ApiClient(
            server.url, config=ApiClientConfig(retry=policy, breaker=None), clock=clock
        )
        query = {"none": "", "seconds": "?retry_after=2", "date": "?retry_date=3"}[form]
        path = f"/status/{status}{query}"
        before = len(server.hits)
        task = asyncio.ensure_future(client.request(method, path, idempotency_key=keyed))
        await _drive(clock, task, delays)
        error = task.exception()
        await client.close()
        hits = server.hits[before:]
        expected = _expected_hits(method, status, keyed)
        cell = (method, status, keyed, form)
        if len(hits) != expected:
            failures.append((cell, f"{len(hits)} attempts, expected {expected}"))
            continue
        if len({h.key for h in hits}) != 1 or (hits[0].key is not None) != keyed:
            failures.append((cell, "the key changed between attempts or is missing"))
        if not isinstance(error, HttpStatusError) or error.status != status:
            failures.append((cell, f"raised {error!r}"))
            continue
        if keyed and status == 409 and not isinstance(error, IdempotencyConflictError):
            failures.append((cell, "409 with a key is not IdempotencyConflictError"))
        if keyed and status == 422 and not isinstance(error, IdempotencyMismatchError):
            failures.append((cell, "422 with a key is not IdempotencyMismatchError"))
        if method != "HEAD" and (error.problem or {}).get("title") != "test problem":
            failures.append((cell, "problem+json body not parsed"))
        if expected > 1 and form == "seconds" and delays != [2.0] * (ATTEMPTS - 1):
            failures.append((cell, f"waits {delays}, Retry-After said 2"))
        # (the manual wall clock runs ahead of the server's after the first wait)
        if expected > 1 and form == "date" and not 1.9 <= delays[0] <= 3.1:
            failures.append((cell, f"waits {delays}, the HTTP-date was ~3 s ahead"))
    assert failures == []
    posts = [h for h in server.hits if h.method in ("POST", "PATCH") and h.key is None]
    assert len(posts) == 2 * len(RETRY_STATUSES + OTHER_STATUSES) * len(FORMS)


async def test_retry_after_seconds_within_50ms_real_time(server: FaultServer) -> None:
    """Retry-After: 1 on a 503, real clock: the retry arrives 1.0 s later, within 50 ms."""
    async with ApiClient(server.url) as client:
        response = await client.get("/status/503?retry_after=1&ok_after=1")
    assert response.status == 200 and response.attempts == 2
    first, second = server.hits
    assert abs((second.at - first.at) - 1.0) <= 0.05


async def test_retry_after_http_date_within_50ms_real_time(server: FaultServer) -> None:
    """Retry-After as an HTTP-date: the retry arrives at that second, within 50 ms."""
    async with ApiClient(server.url) as client:
        response = await client.get("/status/429?retry_date=1.5&ok_after=1")
    assert response.status == 200
    first, second = server.hits
    assert abs(second.at - int(first.at + 1.5)) <= 0.05


async def test_a_retry_after_past_the_deadline_is_not_slept(server: FaultServer) -> None:
    """Retry-After 5 with a 1 s deadline: RetryExhaustedError at once, one attempt."""
    started = time.monotonic()
    async with ApiClient(server.url) as client:
        with pytest.raises(RetryExhaustedError) as info:
            await client.get("/status/503?retry_after=5", deadline=1.0)
    assert time.monotonic() - started < timeout(0.5)
    assert isinstance(info.value.last_exception, HttpStatusError)
    assert server.count("/status/503") == 1


async def test_a_retry_after_over_the_cap_is_surfaced(server: FaultServer) -> None:
    """A Retry-After above max_retry_after is not waited on: the 429 is raised at once."""
    async with ApiClient(server.url) as client:
        with pytest.raises(HttpStatusError) as info:
            await client.get("/status/429?retry_after=3600")
    assert info.value.status == 429 and info.value.retry_after == 3600
    assert server.count("/status/429") == 1


async def test_409_is_retried_with_the_same_key(server: FaultServer) -> None:
    """A keyed POST answered 409 waits and retries with the same key until it succeeds."""
    with retry_testing():
        async with ApiClient(server.url) as client:
            response = await client.post(
                "/status/409?ok_after=2", json={"a": 1}, idempotency_key=True
            )
    assert response.status == 200 and response.attempts == 3
    keys = {h.key for h in server.hits}
    assert keys == {response.idempotency_key} and response.idempotency_key is not None
    assert {h.body for h in server.hits} == {b'{"a":1}'}


async def test_a_post_without_a_key_is_sent_once_even_on_reset(server: FaultServer) -> None:
    """A connection reset mid-body on a POST without a key: ApiConnectionError, one attempt."""
    with retry_testing():
        async with ApiClient(server.url) as client:
            with pytest.raises(ApiConnectionError):
                await client.post("/reset", json={"a": 1})
            with pytest.raises(ApiConnectionError):
                await client.get("/reset")
    assert server.count("/reset") == 1 + ATTEMPTS + 1  # POST once, GET the policy's 4


async def test_a_streamed_body_is_never_retried(server: FaultServer) -> None:
    """A body that cannot be replayed (an async generator) is sent once, even on a PUT."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"part"

    with retry_testing():
        async with ApiClient(server.url) as client:
            with pytest.raises(HttpStatusError):
                await client.request("PUT", "/status/503", data=chunks())  # type: ignore[arg-type]
    assert server.count("/status/503") == 1


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/hang", (ApiTimeoutError, RetryExhaustedError)),
        ("/slow-headers?delay=5", (ApiTimeoutError, RetryExhaustedError)),
        ("/reset", (ApiConnectionError,)),
        ("/status/503", (HttpStatusError,)),
        ("/status/429?retry_after=0", (HttpStatusError,)),
    ],
)
async def test_faults_end_in_a_typed_error_within_the_deadline(
    server: FaultServer, path: str, error: tuple[type[BaseException], ...]
) -> None:
    """Hang, slow headers, reset, 503, 429: a typed error, never past the deadline + slack."""
    policy = RetryPolicy(attempts=4, initial=0.01, max_delay=0.05, deadline=1.0)
    config = ApiClientConfig(retry=policy, attempt_timeout=0.3, breaker=None)
    started = time.monotonic()
    async with ApiClient(server.url, config=config) as client:
        with pytest.raises(error):
            await client.get(path)
    assert time.monotonic() - started < 1.0 + timeout(0.5)


async def test_ten_concurrent_401s_cause_one_refresh(server: FaultServer) -> None:
    """Token expired under 10 concurrent calls: exactly one refresh, all succeed."""
    issued: list[str] = []
    all_refused = asyncio.Event()

    async def provider() -> str:
        if issued:  # a refresh: hold it until all ten 401s arrived
            await asyncio.wait_for(all_refused.wait(), timeout(10))
        issued.append(f"t{len(issued)}")
        return issued[-1]

    async with ApiClient(server.url, token_provider=provider) as client:
        assert (await client.get("/auth")).status == 200
        server.valid_token = "t1"

        async def call() -> int:
            return (await client.get("/auth")).status

        calls = [asyncio.ensure_future(call()) for _ in range(10)]
        while server.count("/auth") < 11:
            await asyncio.sleep(0.005)  # polling the server's record, bounded by the test timeout
        all_refused.set()
        assert await asyncio.gather(*calls) == [200] * 10
        assert client.stats()["127.0.0.1"].token_refreshes == 2
    assert issued == ["t0", "t1"]


async def test_the_breaker_opens_per_host(server: FaultServer) -> None:
    """After enough failures the host's breaker refuses without touching the server."""
    config = ApiClientConfig(
        breaker=BreakerConfig(failure_threshold=3, open_duration=60), retry=RetryPolicy(attempts=1)
    )
    async with ApiClient(server.url, config=config) as client:
        for _ in range(3):
            with pytest.raises(HttpStatusError):
                await client.get("/status/503")
        with pytest.raises(CircuitOpenError):
            await client.get("/status/503")
        assert client.stats()["127.0.0.1"].breaker_state == "open"
    assert server.count("/status/503") == 3


async def test_the_breaker_counts_a_retried_call_once(server: FaultServer) -> None:
    """The breaker runs around the retries: one outcome per logical call, whatever the
    number of attempts (a 503 then 200 is one success; four 503s are one failure)."""
    config = ApiClientConfig(breaker=BreakerConfig(failure_threshold=2, open_duration=60))
    with retry_testing():
        async with ApiClient(server.url, config=config) as client:
            assert (await client.get("/status/503?ok_after=2")).attempts == 3
            with pytest.raises(HttpStatusError):
                await client.get("/status/503")  # four attempts, one failure
            assert client.stats()["127.0.0.1"].breaker_state == "closed"
            with pytest.raises(HttpStatusError):
                await client.get("/status/503")  # the second failure in a row opens it
            assert client.stats()["127.0.0.1"].breaker_state == "open"
    assert server.count("/status/503") == 3 + 4 + 4  # the first call: 503, 503, 200


async def test_the_rate_limiter_refuses_past_the_deadline(server: FaultServer) -> None:
    """rate=1/s: a second call with 0.2 s of budget gets RateLimitedError, not a late send."""
    config = ApiClientConfig(rate=1.0, burst=1.0)
    async with ApiClient(server.url, config=config) as client:
        assert (await client.get("/status/200")).status == 200
        with pytest.raises(RateLimitedError):
            await client.get("/status/200", deadline=0.2)
    assert server.count("/status/200") == 1


async def test_json_into_models_and_typed_decode_errors(server: FaultServer) -> None:
    """ApiResponse.model() builds a library model; a non-model body is ApiDecodeError."""
    from fokha_integration.http._errors import ApiDecodeError

    async with ApiClient(server.url) as client:
        response = await client.get("/status/200?ok_after=0")
        assert response.json()["ok"] is True
        with pytest.raises(ApiDecodeError):
            response.model(Envelope)


async def test_a_body_over_max_response_bytes_is_refused(server: FaultServer) -> None:
    """A response larger than max_response_bytes: ApiDecodeError, not retried."""
    from fokha_integration.http._errors import ApiDecodeError

    config = ApiClientConfig(max_response_bytes=20)
    async with ApiClient(server.url, config=config) as client:
        assert (await client.get("/status/200")).body == b"ok"
        with pytest.raises(ApiDecodeError):
            await client.get("/status/503")  # the problem+json body is ~60 bytes
    assert server.count("/status/503") == 1


async def test_a_declared_length_over_the_limit_is_refused_before_the_body(
    server: FaultServer,
) -> None:
    """Content-Length 100 kB over a 20-byte limit, the body still coming: ApiDecodeError
    at once (not after the attempt timeout), one attempt."""
    from fokha_integration.http._errors import ApiDecodeError

    config = ApiClientConfig(max_response_bytes=20, attempt_timeout=5.0)
    async with ApiClient(server.url, config=config) as client:
        started = time.monotonic()
        with pytest.raises(ApiDecodeError):
            await client.get("/big-pending")
        assert time.monotonic() - started < 2.0
    assert server.count("/big-pending") == 1


async def test_a_closed_session_is_replaced(server: FaultServer) -> None:
    """A shared session its owner closed, or the client's own after close(): the next
    call runs on a new session of the client's own."""
    import aiohttp

    shared = aiohttp.ClientSession()
    client = ApiClient(server.url, session=shared)
    assert (await client.get("/status/200")).status == 200
    await shared.close()
    assert (await client.get("/status/200")).status == 200
    await client.close()
    assert (await client.get("/status/200")).status == 200
    await client.close()
    assert server.count("/status/200") == 3


async def test_stats_count_each_call_once(server: FaultServer) -> None:
    """stats(): one request per call, its attempts, an answer's status, an exception as an error
    (also one raised before the middleware chain runs)."""
    with retry_testing():
        async with ApiClient(server.url) as client:
            assert (await client.get("/status/200")).status == 200
            assert (await client.get("/status/503?ok_after=2")).attempts == 3
            with pytest.raises(HttpStatusError):
                await client.get("/status/404")
            with pytest.raises(HttpStatusError):
                await client.get("/status/500")  # retried 4 times, then raised
            with pytest.raises(TypeError):  # aiohttp refuses the query before any middleware
                await client.get("/status/200", params={"a": object()})  # type: ignore[dict-item]
            stats = client.stats()["127.0.0.1"]
    assert (stats.requests, stats.attempts, stats.errors) == (5, 1 + 3 + 1 + 4, 2)
    assert stats.statuses == {200: 2, 404: 1}
    assert 0 < stats.latency_avg <= stats.latency_max


async def test_the_body_returned_is_the_last_answers(server: FaultServer) -> None:
    """After a retried 503 or a 401 and a token refresh, the body is the final answer's."""
    tokens = iter(["old", "new"])

    async def provider() -> str:
        return next(tokens)

    server.valid_token = "new"
    with retry_testing():
        async with ApiClient(server.url, token_provider=provider) as client:
            retried = await client.get("/status/503?ok_after=1")
            refreshed = await client.get("/auth")
    assert retried.attempts == 2 and retried.json()["ok"] is True
    assert refreshed.status == 200 and refreshed.body == b"in"


async def test_the_retry_stage_on_a_plain_session_keeps_the_policys_deadline(
    server: FaultServer,
) -> None:
    """RetryMiddleware given straight to an aiohttp session (no ApiClient around it):
    the call's time counts from its start (retry hooks see seconds, not the machine's
    uptime) and the policy's own deadline holds (a Retry-After past it is not slept)."""
    import aiohttp

    from fokha_integration.clock import SYSTEM_CLOCK
    from fokha_integration.http._client_mw import RetryMiddleware

    seen: list[RetryDetails] = []
    policy = RetryPolicy(
        attempts=3, initial=0.01, max_delay=0.02, deadline=1.0, hooks=(seen.append,)
    )
    stage = RetryMiddleware(policy, 5.0, SYSTEM_CLOCK)
    async with aiohttp.ClientSession(middlewares=(stage,)) as session:
        async with session.get(server.url + "/status/503?ok_after=1") as resp:
            assert resp.status == 200
        assert [d.elapsed < timeout(1.0) for d in seen] == [True]
        started = time.monotonic()
        with pytest.raises(RetryExhaustedError):
            await session.get(server.url + "/status/503?retry_after=5")
    assert time.monotonic() - started < timeout(0.5)
