"""Channel logs, recovery decisions and the slow-client pending state (no sockets)."""

from __future__ import annotations

import json
import logging

from hypothesis import given
from hypothesis import strategies as st

from fokha_integration.ws import Mode, Position
from fokha_integration.ws._channels import ChannelLog, ChannelStore
from fokha_integration.ws._fanout import Conn, Counters, Fanout, SlowClientPolicy


@given(
    history=st.integers(1, 20),
    published=st.integers(0, 60),
    since_seq=st.integers(0, 70),
    same_epoch=st.booleans(),
)
def test_recovery_follows_the_documented_rules(
    history: int, published: int, since_seq: int, same_epoch: bool
) -> None:
    """recover() returns exactly the missed messages or a recovered=false snapshot."""
    log = ChannelLog("signals.a", history=history)
    for i in range(published):
        log.append(json.dumps({"i": i}), float(i), float(i))
    since = Position(log.epoch if same_epoch else "other", since_seq)
    rec = log.recover(since)
    if published == 0:
        assert (rec.position, rec.recovered, rec.messages) == (None, False, ())
        return
    assert rec.position == Position(log.epoch, published)
    oldest = published - min(history, published) + 1
    if same_epoch and since_seq == published:
        assert (rec.recovered, rec.messages) == (True, ())
    elif same_epoch and oldest - 1 <= since_seq < published:
        assert rec.recovered is True
        assert [m.seq for m in rec.messages] == list(range(since_seq + 1, published + 1))
    else:
        assert rec.recovered is False
        assert [m.seq for m in rec.messages] == [published]


def test_no_since_gives_the_latest_snapshot_and_reset_changes_epoch() -> None:
    """Without since: the latest value; after reset the old epoch no longer recovers."""
    store = ChannelStore(history=5)
    assert store.recover("prices.X", None).messages == ()
    store.append("prices.X", "1", 0.0, 0.0)
    store.append("prices.X", "2", 0.0, 0.0)
    log = store.log("prices.X")
    assert log is not None
    rec = store.recover("prices.X", None)
    assert (rec.recovered, [m.data_json for m in rec.messages]) == (None, ["2"])
    old = log.epoch
    log.reset()
    log.append("3", 0.0, 0.0)
    assert log.epoch != old
    assert store.recover("prices.X", Position(old, 2)).recovered is False


def _conn(queue_size: int, max_pending: int = 10_000) -> Conn:
    policy = SlowClientPolicy(queue_size=queue_size, max_pending=max_pending)
    fanout = Fanout(policy, Counters(), logging.getLogger("test"))
    return Conn(fanout, ws=None, session=None)  # type: ignore[arg-type]


@given(queue_size=st.integers(1, 10), count=st.integers(1, 60), after=st.integers(0, 5))
def test_pending_all_channel_keeps_order_and_marks_every_loss(
    queue_size: int, count: int, after: int
) -> None:
    """A slow 'all' subscription yields its messages in order; whatever it dropped is
    covered by gap markers, so the seqs seen + gap ranges are exactly after+1..count."""
    log = ChannelLog("signals.a", history=100)
    conn = _conn(queue_size)
    conn.modes["signals.a"] = Mode.ALL
    for _ in range(count):
        conn.enqueue(log.append("{}", 0.0, 0.0))
        assert conn.pending_count <= queue_size + 1
    covered: list[int] = []
    for frame in conn.take_pending("signals.a", after):
        f = json.loads(frame)
        if f["kind"] == "gap":
            covered.extend(range(f["from"], f["seq"] + 1))
        else:
            assert f["kind"] == "update"
            covered.append(f["seq"])
    assert covered == list(range(after + 1, count + 1))
    assert conn.pending_count == 0


@given(count=st.integers(1, 50), after=st.integers(0, 60))
def test_pending_latest_channel_conflates_to_one_message(count: int, after: int) -> None:
    """A slow 'latest' subscription keeps one entry and sends the newest, marked conflated."""
    log = ChannelLog("prices.X", history=100)
    conn = _conn(5)
    conn.modes["prices.X"] = Mode.LATEST
    for _ in range(count):
        conn.enqueue(log.append("{}", 0.0, 0.0))
    assert conn.pending_count == 1
    frames = [json.loads(f) for f in conn.take_pending("prices.X", after)]
    if after >= count:
        assert frames == []
    elif after + 1 == count:
        assert [(f["kind"], f["seq"]) for f in frames] == [("update", count)]
    else:
        assert [(f["kind"], f["seq"], f["from"]) for f in frames] == [
            ("conflated", count, after + 1)
        ]


def test_age_history_drops_old_messages_but_keeps_the_latest() -> None:
    """With max_age, messages older than the age are dropped on append and on recover;
    the latest value survives for snapshots."""
    from fokha_integration.ws import HistoryPolicy

    log = ChannelLog("signals.a", history=HistoryPolicy(count=1000, max_age=10.0))
    for i in range(5):
        log.append(json.dumps(i), float(i), float(i))
    assert len(log) == 5
    log.append("5", 20.0, 20.0)  # everything before t=10 is now too old
    assert len(log) == 1
    rec = log.recover(Position(log.epoch, 2), now=100.0)
    assert rec.recovered is False
    assert [m.seq for m in rec.messages] == [6]


def test_bytes_per_retained_message_stay_near_the_documented_figure() -> None:
    """The documented ~800 bytes per retained ~200-byte message holds (guard: < 1,100)."""
    import tracemalloc

    from fokha_integration.ws import HistoryPolicy

    payload = json.dumps({"symbol": "EURUSD", "note": "x" * 150}, separators=(",", ":"))
    n = 20_000
    log = ChannelLog("signals.trend", history=HistoryPolicy(count=n, max_age=600.0))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            log.append(payload[:-2] + f"{i:02d}" + payload[-2:], i * 0.0005, i * 0.0005)
        per_message = (tracemalloc.get_traced_memory()[0] - base) / n
    finally:
        tracemalloc.stop()
    assert 300 < per_message < 1100, per_message
