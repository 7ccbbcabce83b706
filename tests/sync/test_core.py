"""The sans-I/O core: parsing, cursors, resolution policies, push planning."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fokha_integration.errors import ValidationError
from fokha_integration.sync import Collection, Cursor, HybridClock, Limits, MutationGapError, Record
from fokha_integration.sync._core import parse_pull, parse_push, plan_push, resolve

COLLS = {
    "w": Collection("w"),
    "sw": Collection("sw", "server_wins"),
    "cw": Collection("cw", "client_wins"),
    "fm": Collection("fm", "field_merge"),
}
T0 = 1_700_000_000_000


def v(ms: int, node: str = "c") -> str:
    """A version string at T0 + ms."""
    return f"{T0 + ms:015d}-00000-{node}"


def mut(mid: Any, rid: str = "a", data: Any = ..., ms: int = 1, **kw: Any) -> dict[str, Any]:
    """A wire mutation."""
    body = {
        "mutation_id": mid,
        "collection": kw.pop("collection", "w"),
        "id": rid,
        "op": "put",
        "data": {"x": mid} if data is ... else data,
        "version": v(ms),
    }
    body.update(kw)
    return body


def minted() -> str:
    """A fixed server version for resolutions that mint one."""
    return v(10_000, "s")


def test_parse_push_accepts_a_good_batch() -> None:
    """A well-formed push parses into mutations."""
    cid, muts = parse_push(
        {"client_id": "c1", "mutations": [mut(1), mut(2, op="delete", data=None)]}, COLLS, Limits()
    )
    assert cid == "c1"
    assert [m.op for m in muts] == ["put", "delete"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"mutations": []}, "client_id"),
        ({"client_id": "c", "mutations": {}}, "mutations"),
        ({"client_id": "c", "mutations": [mut(1, collection="nope")]}, "mutations[0].collection"),
        ({"client_id": "c", "mutations": [mut(1), mut(1, "b")]}, "mutations[1].mutation_id"),
        ({"client_id": "c", "mutations": [mut(1, data=[1])]}, "mutations[0].data"),
        ({"client_id": "c", "mutations": [mut(True)]}, "mutations[0].mutation_id"),
        ({"client_id": "c", "mutations": [mut(1, version="x")]}, "mutations[0].version"),
        ({"client_id": "c", "mutations": [mut(1, op="upsert")]}, "mutations[0].op"),
        (
            {"client_id": "c", "mutations": [mut(1, data={"p": float("inf")})]},
            "mutations[0].data.p",
        ),
        ({"client_id": "c", "mutations": [mut(1, extra=1)]}, "mutations[0].extra"),
        ({"client_id": "c", "mutations": [mut(i + 1, str(i)) for i in range(3)]}, "mutations"),
    ],
)
def test_parse_push_names_the_field(body: Any, field: str) -> None:
    """Each malformed push is refused with the JSON path of the offending field."""
    with pytest.raises(ValidationError) as info:
        parse_push(body, COLLS, Limits(max_mutations=2))
    assert info.value.field == field


def test_parse_pull_and_cursor() -> None:
    """Pull bodies and cursors round-trip; a foreign cursor is refused."""
    req = parse_pull(
        {"client_id": "c", "collections": ["w"], "cursor": "ab12.7.s3", "limit": 5}, COLLS, Limits()
    )
    assert req.cursor == Cursor("ab12", 7, 3)
    assert Cursor.decode(req.cursor.encode()) == req.cursor
    with pytest.raises(ValidationError) as info:
        parse_pull({"client_id": "c", "collections": ["w"], "cursor": "garbage"}, COLLS, Limits())
    assert info.value.field == "cursor"
    with pytest.raises(ValidationError) as info:
        parse_pull({"client_id": "c", "collections": ["w", 3]}, COLLS, Limits())
    assert info.value.field == "collections[1]"


def test_cursor_reset_rules() -> None:
    """Behind the floor or from another store: reset; a snapshot of the current generation: not."""
    assert Cursor("e", 3).needs_reset("e", floor=5, generation=1)
    assert not Cursor("e", 5).needs_reset("e", floor=5, generation=1)
    assert Cursor("x", 9).needs_reset("e", floor=0, generation=0)
    assert not Cursor("e", 0, 1).needs_reset("e", floor=5, generation=1)
    assert Cursor("e", 0, 0).needs_reset("e", floor=5, generation=1)


def rec(
    ms: int, data: dict[str, Any] | None = None, node: str = "c", deleted: bool = False
) -> Record:
    """A record of collection w, id a."""
    return Record("w", "a", None if deleted else (data or {"v": ms}), v(ms, node), deleted)


def test_lww_picks_the_higher_version_and_logs_the_loser() -> None:
    """LWW: the higher HLC wins; a concurrent or losing write is a conflict."""
    cur = rec(5)
    win = resolve("lww", cur, rec(7), base_version=cur.version, mint=minted)
    assert win.store == rec(7)
    assert not win.conflicted
    concurrent = resolve("lww", cur, rec(7), base_version=None, mint=minted)
    assert concurrent.conflicted
    assert concurrent.winner == rec(7)
    lose = resolve("lww", cur, rec(3), base_version=None, mint=minted)
    assert lose.store is None
    assert lose.winner == cur
    assert lose.conflicted


def test_policies_on_a_concurrent_write() -> None:
    """server_wins keeps the server's, client_wins forces the client's, field_merge merges keys."""
    cur = rec(5, {"a": 1, "b": 1})
    inc = rec(7, {"b": 2, "c": 2})
    assert resolve("server_wins", cur, inc, None, minted).store is None
    older = rec(3, {"b": 2})
    cw = resolve("client_wins", cur, older, None, minted)
    assert cw.store is not None
    assert cw.store.data == {"b": 2}
    assert cw.store.version == minted()
    fm = resolve("field_merge", cur, inc, None, minted)
    assert fm.store is not None
    assert fm.store.data == {"a": 1, "b": 2, "c": 2}
    custom = resolve(
        lambda lo, re: {"n": len(lo.data or {}) + len(re.data or {})}, cur, inc, None, minted
    )
    assert custom.store is not None
    assert custom.store.data == {"n": 4}


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.sampled_from("xyz"), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_lww_is_order_independent(writes: list[tuple[int, str, bool]]) -> None:
    """Under LWW the surviving record is the maximum version, whatever the arrival order."""
    records = [rec(ms, node=node, deleted=d) for ms, node, d in writes]
    for order in (records, list(reversed(records))):
        cur: Record | None = None
        for r in order:
            res = resolve("lww", cur, r, None, minted)
            if res.store is not None:
                cur = res.store
        assert cur is not None
        assert cur.version == max(r.version for r in records)


def plan(
    last: int,
    muts: list[dict[str, Any]],
    current: dict[tuple[str, str], Record] | None = None,
    colls: dict[str, Collection] = COLLS,
) -> Any:
    """Plan a push with a clock at T0."""
    _, parsed = parse_push({"client_id": "c", "mutations": muts}, colls, Limits())
    clock = HybridClock("s", wall=lambda: (T0 + 1000) / 1000)
    return plan_push("c", last, parsed, current or {}, colls, clock, T0)


def test_plan_duplicates_gap_and_advance() -> None:
    """ids <= last are duplicates, the next must be last+1, rejections still advance."""
    p = plan(2, [mut(1), mut(2), mut(3), mut(4, ms=10**9)])
    assert [r.status for r in p.results] == ["duplicate", "duplicate", "applied", "rejected"]
    assert p.last_mutation_id == 4
    assert p.results[3].reason is not None
    assert p.results[3].reason.startswith("clock_skew")
    with pytest.raises(MutationGapError) as info:
        plan(2, [mut(4)])
    assert info.value.expected == 3


def test_plan_rejects_what_the_validator_refuses() -> None:
    """A collection validator's ValidationError rejects the mutation and advances the id."""

    def no_negative(data: Any) -> None:
        if data.get("x", 0) < 0:
            raise ValidationError("x", "negative", data["x"])

    colls = {"w": Collection("w", validate=no_negative)}
    p = plan(0, [mut(1, data={"x": -1}), mut(2)], colls=colls)
    assert [r.status for r in p.results] == ["rejected", "applied"]
    assert p.last_mutation_id == 2
    assert len(p.writes) == 1
