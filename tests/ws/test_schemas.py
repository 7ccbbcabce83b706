"""The JSON Schemas and the AsyncAPI document of protocol v1: valid, in step with the
protocol table, satisfied by the vectors, and strict enough to catch a wrong frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from fokha_integration.ws import protocol_table as table
from tests.wire_schemas import SCHEMAS, FrameChecker, checker

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "websocket"
ASYNCAPI = ROOT / "docs" / "protocols" / "asyncapi" / "websocket.json"


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.json").read_text())


def test_every_schema_is_valid_2020_12() -> None:
    """Each schema file is a valid JSON Schema 2020-12 document with an $id."""
    for path in SCHEMAS.glob("*.json"):
        doc = json.loads(path.read_text())
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert doc["$id"].endswith(f"/ws/{path.name}")
        Draft202012Validator.check_schema(doc)


def test_schemas_agree_with_the_protocol_table() -> None:
    """Error codes, message kinds, frame types and ops in the schemas are the table's."""
    assert _schema("error")["properties"]["code"]["enum"] == [e.code for e in table.ERROR_CODES]
    assert _schema("message")["properties"]["kind"]["enum"] == list(table.MESSAGE_KINDS)
    union = [ref["$ref"] for ref in _schema("server-frame")["oneOf"]]
    assert union == [f"{t}.json" for t in table.SERVER_FRAME_TYPES]
    commands = [ref["$ref"] for ref in _schema("client-command")["oneOf"]]
    assert commands == [f"{op.op}.json" for op in table.CLIENT_OPS]
    for op in table.CLIENT_OPS:
        schema = _schema(op.op)
        assert ("id" in schema["required"]) is op.id_required


def test_server_frame_vectors_validate() -> None:
    """Every frame in server_frames.json fits server-frame.json."""
    check = FrameChecker()
    cases = json.loads((VECTORS / "server_frames.json").read_text())["cases"]
    assert cases
    for case in cases:
        assert check.errors("server", case["frame"]) == [], case["name"]


def test_accepted_commands_in_the_session_vectors_validate() -> None:
    """Every command in session.json that the server accepts (no error reply) fits
    client-command.json, and every one refused with bad_field/bad_channel/bad_json does not."""
    check = FrameChecker()
    spec = json.loads((VECTORS / "session.json").read_text())
    accepted = refused = 0
    for case in spec["cases"]:
        for step in case["steps"]:
            if "send" not in step:
                continue
            codes = {f.get("code") for f in step["expect"] if f.get("type") == "error"}
            problems = check.errors("client", step["send"])
            if not codes:
                assert problems == [], (case["name"], step["send"])
                accepted += 1
            elif "listed twice" in case["name"]:
                continue  # a name and an object for one channel: no schema can say that
            elif codes & {"bad_field", "bad_channel", "unknown_op", "unsupported_version"}:
                assert problems, (case["name"], step["send"])
                refused += 1
    assert accepted >= 10 and refused >= 10


@pytest.mark.parametrize(
    ("role", "frame"),
    [
        ("server", {"type": "heartbeat", "time": 1.0, "channels": {"a.b": None}}),
        ("server", {"type": "error", "id": None, "code": "rate_limited", "message": "x",
                    "temporary": True}),
        ("server", {"type": "error", "id": 1, "code": "frame_too_large", "message": "x",
                    "temporary": False}),
        ("server", {"type": "error", "id": 1, "code": "forbidden", "message": "x",
                    "temporary": True}),
        ("server", {"type": "message", "channel": "a.b", "epoch": "E", "seq": 2, "kind": "gap",
                    "ts": 1.0, "sent": 1.0, "data": {"x": 1}, "from": 1}),
        ("server", {"type": "message", "channel": "a.b", "epoch": "E", "seq": 2,
                    "kind": "update", "ts": 1.0, "sent": 1.0, "data": 1, "recovered": False}),
        ("server", {"type": "pong", "id": -1}),
        ("server", {"type": "teleport"}),
        ("client", {"op": "hello", "id": 1, "token": None}),
        ("client", {"op": "hello", "id": 1, "protocol": "1"}),
        ("client", {"op": "subscribe", "id": 1, "channels": ["a..b"]}),
        ("client", {"op": "unsubscribe", "id": 1, "channels": ["a.b", "a.b"]}),
    ],
)  # fmt: skip
def test_wrong_frames_fail_validation(role: str, frame: dict[str, Any]) -> None:
    """Negative test: frames the spec forbids fail the schemas."""
    assert FrameChecker().errors(role, frame)


def test_the_fixture_records_a_wrong_frame_and_counts_every_frame() -> None:
    """The autouse checker counts frames and records (not raises) a frame that fails."""
    check = checker()
    before = (check.counts["server"], len(check.failures))
    check.check("server", b'{"type":"heartbeat","time":1.0,"channels":{"a.b":null}}')
    try:
        assert check.counts["server"] == before[0] + 1
        assert len(check.failures) == before[1] + 1
        assert "fails its schema" in check.failures[-1]
    finally:
        del check.failures[before[1] :]


def test_asyncapi_document_references_every_frame_schema() -> None:
    """The AsyncAPI 3.0 document lists every command and server frame, each payload a
    $ref to an existing schema file."""
    doc = json.loads(ASYNCAPI.read_text())
    assert doc["asyncapi"].startswith("3.")
    messages = doc["components"]["messages"]
    names = {m["name"] for m in messages.values()}
    assert names == set(table.SERVER_FRAME_TYPES) | {op.op for op in table.CLIENT_OPS}
    for message in messages.values():
        ref = message["payload"]["schema"]["$ref"]
        assert (ASYNCAPI.parent / ref).resolve().is_file(), ref
    operations = doc["operations"]
    assert {o["action"] for o in operations.values()} == {"send", "receive"}
    channel_messages = doc["channels"]["stream"]["messages"]
    for op in operations.values():
        for ref in op["messages"]:
            assert ref["$ref"].rsplit("/", 1)[1] in channel_messages
