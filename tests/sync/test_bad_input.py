"""Fuzzed push/pull bodies: 4xx problem+json naming the field, nothing partially applied."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fokha_integration.sync import Limits, MemorySyncStore, SyncConfig, SyncService

T0 = 1_700_000_000_000
VERSION = f"{T0:015d}-00000-c"
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
good_mutation = st.fixed_dictionaries(
    {
        "mutation_id": st.integers(1, 3),
        "collection": st.sampled_from(["w", "nope"]),
        "id": st.text(min_size=1, max_size=5),
        "op": st.sampled_from(["put", "delete", "x"]),
        "data": st.one_of(
            st.none(), st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)
        ),
        "version": st.sampled_from([VERSION, "bad", 12]),
    },
)
mutated_mutation = st.one_of(
    good_mutation,
    json_values,
    st.builds(
        lambda m, k, v: {**m, k: v},
        good_mutation,
        st.sampled_from(
            ["mutation_id", "collection", "id", "op", "data", "version", "base_version", "zz"]
        ),
        json_values,
    ),
)
push_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "client_id": st.one_of(st.just("fz"), json_values),
            "mutations": st.lists(mutated_mutation, max_size=4),
        }
    ),
)
pull_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "client_id": st.one_of(st.just("fz"), json_values),
            "collections": st.one_of(st.just(["w"]), json_values),
            "cursor": st.one_of(st.none(), st.text(max_size=12), json_values),
            "limit": st.one_of(st.integers(-2, 10), json_values),
        }
    ),
)


def fresh() -> tuple[asyncio.AbstractEventLoop, SyncService]:
    """A loop and a started service with a tiny batch limit."""
    loop = asyncio.new_event_loop()
    svc = SyncService(
        MemorySyncStore(),
        ["w"],
        config=SyncConfig(limits=Limits(max_mutations=3)),
        wall=lambda: T0 / 1000,
    )
    loop.run_until_complete(svc.start())
    return loop, svc


async def snapshot(svc: SyncService) -> Any:
    """What a refused request must not change."""
    status = await svc.status()
    return (
        status.high_seq,
        status.records,
        [(c.client_id, c.last_mutation_id) for c in status.clients],
    )


def check(loop: asyncio.AbstractEventLoop, svc: SyncService, route: str, raw: bytes) -> None:
    """Send one body; a refusal is problem+json with a field, and changes nothing."""
    before = loop.run_until_complete(snapshot(svc))
    status, body = loop.run_until_complete(svc.handle(route, raw))
    answer = json.loads(body)
    if status == 200:
        return
    assert 400 <= status < 500, answer
    assert answer["status"] == status
    assert answer["type"].startswith("urn:fokha:sync:")
    if answer["code"] in ("invalid", "bad_json", "mutation_gap"):
        assert isinstance(answer["field"], str)
        assert answer["field"]
    if route == "push":
        assert loop.run_until_complete(snapshot(svc)) == before
    # The server keeps serving.
    ok, _ = loop.run_until_complete(
        svc.handle("pull", b'{"client_id": "probe", "collections": ["w"]}')
    )
    assert ok == 200


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(push_bodies)
def test_fuzzed_push(body: Any) -> None:
    """Any push body is applied whole or refused whole with a 4xx naming the field."""
    loop, svc = fresh()
    try:
        check(loop, svc, "push", json.dumps(body).encode())
    finally:
        loop.close()


@FUZZ
@given(pull_bodies)
def test_fuzzed_pull(body: Any) -> None:
    """Any pull body is answered or refused with a 4xx naming the field."""
    loop, svc = fresh()
    try:
        check(loop, svc, "pull", json.dumps(body).encode())
    finally:
        loop.close()


@FUZZ
@given(st.binary(max_size=40))
def test_fuzzed_bytes(raw: bytes) -> None:
    """Arbitrary bytes never crash the handler."""
    loop, svc = fresh()
    try:
        check(loop, svc, "push", raw)
        check(loop, svc, "pull", raw)
    finally:
        loop.close()
