"""The sans-I/O receiver: the exactly-once decisions, from shared vectors (no files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fokha_integration.bridge._folders import message_name
from fokha_integration.bridge._frame import decode_frame, encode_frame
from fokha_integration.bridge._journal import JournalEntry
from fokha_integration.bridge._receiver import (
    Ack,
    Action,
    Begin,
    Deliver,
    Done,
    Quarantine,
    Receiver,
    Resolve,
    SendReply,
)
from fokha_integration.bridge._types import Counters, Reply, ReplyStatus, Waiter
from fokha_integration.models import canonical_json

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "file-bridge-receiver" / "receiver.json"
DOC = json.loads(VECTORS.read_text())
CASES = DOC["cases"]


def as_dict(action: Action) -> dict[str, Any]:
    """An action in the vectors' notation (reply texts parsed back into objects)."""
    if isinstance(action, Begin):
        return {"action": "begin", "message_id": action.message_id}
    if isinstance(action, Deliver):
        m = action.message
        return {"action": "deliver", "message_id": m.id, "redelivered": m.redelivered}
    if isinstance(action, Done):
        reply = None if action.reply is None else json.loads(action.reply)
        return {
            "action": "done",
            "message_id": action.message_id,
            "reply_id": action.reply_id,
            "reply": reply,
        }
    if isinstance(action, SendReply):
        return {
            "action": "send_reply",
            "reply_id": action.reply_id,
            "reply": json.loads(action.reply),
        }
    if isinstance(action, Resolve):
        return {
            "action": "resolve",
            "request_id": action.request_id,
            "status": action.reply.status.value,
            "reply_id": action.reply.id,
            "ticket": action.reply.ticket,
        }
    if isinstance(action, Quarantine):
        return {"action": "quarantine", "code": action.code, "detail": action.detail}
    assert isinstance(action, Ack)
    return {"action": "ack"}


def journal_entry(raw: dict[str, Any] | None) -> JournalEntry | None:
    if raw is None:
        return None
    reply = raw.get("reply")
    text = None if reply is None else canonical_json(reply)
    return JournalEntry(0.0, raw["state"], raw.get("reply_id"), text)


def outcome_of(raw: dict[str, Any]) -> Reply | Exception | None:
    if "reply" in raw:
        return Reply(ReplyStatus(raw["reply"]["status"]), raw["reply"]["details"])
    if "error" in raw:
        return RuntimeError(raw["error"])
    return None


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector(case: dict[str, Any]) -> None:
    """The receiver answers each vector's frame, journal state and waiter with its actions."""
    spec = case["frame"]
    frame = decode_frame(
        encode_frame(spec["id"], spec["seq"], canonical_json(spec["data"]).encode())
    )
    sender = spec["data"].get("sender", "py")
    name = case.get("file") or message_name(spec["seq"], sender, spec["id"])
    entry = journal_entry(case["journal"])
    waiter = None if case["waiter"] is None else Waiter(**case["waiter"])
    counters = Counters()
    receiver = Receiver(DOC["sender"], counters)
    wanted = receiver.wanted(frame, consumer=case["consumer"], waiter=waiter, entry=entry)
    assert wanted is case["wanted"]
    if not wanted:
        return
    actions = receiver.seen(name, frame, entry, waiter)
    assert [as_dict(a) for a in actions] == case["seen"]
    if isinstance(actions[-1], Deliver):
        handled = receiver.handled(
            actions[-1].message,
            outcome_of(case["outcome"]),
            now=case["now"],
            reply_id=case["reply_id"],
        )
        assert [as_dict(a) for a in handled] == case["handled"]
    else:
        assert "handled" not in case
    for counter, value in case.get("counters", {}).items():
        assert getattr(counters, counter) == value, counter


def test_vectors_cover_every_action_and_outcome() -> None:
    """The vectors exercise every action kind, every outcome and every journal state."""
    seen = {a["action"] for c in CASES for a in c.get("seen", []) + c.get("handled", [])}
    assert seen == {"begin", "deliver", "done", "send_reply", "resolve", "quarantine", "ack"}
    outcomes = {next(iter(c["outcome"])) for c in CASES if "outcome" in c}
    assert outcomes == {"reply", "none", "error"}
    states = {None if c["journal"] is None else c["journal"]["state"] for c in CASES}
    assert states == {None, "begun", "done"}


def test_an_exactly_once_run_through_a_crash() -> None:
    """A request handled, then seen again after a crash before its acknowledgement, runs
    once: the second sighting only re-sends the stored reply."""
    counters = Counters()
    receiver = Receiver("ea", counters)
    payload = {"type": "request", "kind": "order", "sender": "py", "sent_at": 1.0, "body": {}}
    frame = decode_frame(encode_frame("o1", 5, canonical_json(payload).encode()))
    name = message_name(5, "py", "o1")
    first = receiver.seen(name, frame, None, None)
    assert isinstance(first[-1], Deliver)
    after = receiver.handled(
        first[-1].message, Reply(ReplyStatus.EXECUTED, {"ticket": 1}), now=2.0, reply_id="R"
    )
    done = after[0]
    assert isinstance(done, Done)
    # The crash: the journal holds "done" with the reply; the file is still in cur/.
    entry = JournalEntry(2.0, "done", done.reply_id, done.reply)
    again = receiver.seen(name, frame, entry, None)
    assert [type(a) for a in again] == [SendReply, Ack]
    assert again[0] == SendReply("R", done.reply or "")
    assert counters.duplicates == 1
