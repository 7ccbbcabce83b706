"""Validate every WebSocket frame our server sends and our client sends against the schemas.

``docs/protocols/schemas/ws/`` holds the JSON Schemas (2020-12) of protocol v1. The
``ws_frames_validated`` fixture (autouse, from ``tests/conftest.py``) patches
``websockets``' ``Protocol.send_text`` for the duration of each test: every text
frame leaving a connection of our ``WebSocketServer`` is checked against
``server-frame.json`` and every one leaving our ``WebSocketClient`` against
``client-command.json``. Raw test clients (which send bad frames on purpose) and other
websockets servers are not checked. A frame that fails is recorded (raising inside a
broadcast would be swallowed) and the test fails at teardown. :data:`CHECKER` counts
the frames; the terminal summary prints the totals.
"""

from __future__ import annotations

import json
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "protocols" / "schemas" / "ws"


class FrameChecker:
    """Validators for both directions, a count of frames checked and the failures seen."""

    def __init__(self, directory: Path = SCHEMAS) -> None:
        from jsonschema import Draft202012Validator

        docs: dict[str, Any] = {}
        for path in sorted(directory.glob("*.json")):
            contents = json.loads(path.read_text())
            Draft202012Validator.check_schema(contents)
            docs[path.name] = contents

        def inline(node: Any, current: str) -> Any:
            # Resolve every $ref once, at load time (our schemas have no cycles): the
            # registry lookup per $ref made validation ~1.7 ms a frame.
            if isinstance(node, list):
                return [inline(item, current) for item in node]
            if not isinstance(node, dict):
                return node
            ref = node.get("$ref")
            if isinstance(ref, str):
                file, _, pointer = ref.partition("#")
                file = file or current
                target: Any = docs[file]
                for part in filter(None, pointer.split("/")):
                    target = target[part]
                return inline(target, file)
            return {k: inline(v, current) for k, v in node.items() if k not in ("$id", "$schema")}

        def validator(name: str) -> Draft202012Validator:
            schema = inline(docs[f"{name}.json"], f"{name}.json")
            return Draft202012Validator(schema, format_checker=None)

        # The union schemas (oneOf) for the record, one validator per frame type for speed:
        # a frame is dispatched on its "type"/"op" like a client would.
        self.validators = {
            "server": validator("server-frame"),
            "client": validator("client-command"),
        }
        self._by_key: dict[tuple[str, str], Draft202012Validator] = {}
        for name in docs:
            stem = name.removesuffix(".json")
            if stem not in ("common", "server-frame", "client-command"):
                self._by_key[("any", stem)] = validator(stem)
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        # A broadcast sends the same bytes to many connections: validate each once.
        self._valid: dict[tuple[str, bytes], bool] = {}

    def errors(self, role: str, frame: object) -> list[str]:
        """Why ``frame`` does not fit the ``role``'s schema (empty when it does)."""
        key = None
        if isinstance(frame, dict):
            key = frame.get("type" if role == "server" else "op")
        specific = self._by_key.get(("any", key)) if isinstance(key, str) else None
        validator = specific or self.validators[role]
        if validator.is_valid(frame):
            # The union must agree (a type name that is also an op would slip through).
            return [] if specific is None or self._in_union(role, key) else ["wrong direction"]
        return [e.message for e in validator.iter_errors(frame)]

    @staticmethod
    def _in_union(role: str, key: str | None) -> bool:
        from fokha_integration.ws import protocol_table as table

        if role == "server":
            return key in table.SERVER_FRAME_TYPES
        return key in {op.op for op in table.CLIENT_OPS}

    def check(self, role: str, data: bytes) -> None:
        """Count and validate one frame sent by ``role`` (``server`` or ``client``)."""
        self.counts[role] += 1
        key = (role, bytes(data))
        if self._valid.get(key):
            return
        try:
            frame = json.loads(data)
        except ValueError:
            self.failures.append(f"{role} sent a frame that is not JSON: {data[:200]!r}")
            return
        problems = self.errors(role, frame)
        if problems:
            self.failures.append(f"{role} frame {data[:300]!r} fails its schema: {problems[:3]}")
            return
        if len(self._valid) > 50_000:
            self._valid.clear()
        self._valid[key] = True


_checker: FrameChecker | None = None


def checker() -> FrameChecker:
    """The session's checker (schemas loaded once)."""
    global _checker
    if _checker is None:
        _checker = FrameChecker()
    return _checker


@contextmanager
def validating_frames(monkeypatch: Any) -> Iterator[FrameChecker]:
    """Patch websockets so our server's and client's text frames are validated."""
    from websockets.protocol import Protocol

    from fokha_integration.ws import _client, _server

    check = checker()
    roles: weakref.WeakKeyDictionary[Protocol, str] = weakref.WeakKeyDictionary()
    original_send_text = Protocol.send_text
    original_init = _server._Connection.__init__

    def send_text(self: Protocol, data: Any, fin: bool = True) -> None:
        role = roles.get(self)
        if role is not None and fin:
            check.check(role, bytes(data))
        original_send_text(self, data, fin)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        roles[self.protocol] = "server"

    class connect(_client.connect):  # type: ignore[misc,name-defined]
        async def __aenter__(self) -> Any:
            ws = await super().__aenter__()
            roles[ws.protocol] = "client"
            return ws

    monkeypatch.setattr(Protocol, "send_text", send_text)
    monkeypatch.setattr(_server._Connection, "__init__", init)
    monkeypatch.setattr(_client, "connect", connect)
    before = len(check.failures)
    yield check
    new = check.failures[before:]
    del check.failures[before:]
    if new:
        raise AssertionError("frames that fail the WebSocket schemas:\n" + "\n".join(new[:5]))
