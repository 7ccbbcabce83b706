"""The v1 frame codec: test vectors, round trips, truncation and corruption detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fokha_integration.bridge import (
    CorruptFrameError,
    IncompleteFrameError,
    decode_frame,
    encode_frame,
)
from fokha_integration.errors import FrameError
from fokha_integration.models import canonical_json
from tests.bridge import ea_emulator
from tests.support import examples

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "file-bridge"
VALID = sorted((VECTORS / "valid").glob("*.fkb"))
INVALID = sorted((VECTORS / "invalid").glob("*.fkb"))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=6)
ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
seqs = st.integers(min_value=0, max_value=10**20 - 1)


def test_vectors_exist() -> None:
    """The vector folders hold valid and invalid frames."""
    assert len(VALID) >= 5
    assert len(INVALID) >= 15


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_vectors_decode(path: Path) -> None:
    """Each valid vector decodes to the expected id, seq and payload."""
    expected = json.loads(path.with_suffix(".json").read_text("utf-8"))
    frame = decode_frame(path.read_bytes())
    assert (frame.id, frame.seq, frame.data) == (
        expected["id"],
        expected["seq"],
        expected["payload"],
    )


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_vectors_are_classified(path: Path) -> None:
    """Each invalid vector is incomplete or corrupt with the expected reason code."""
    expected = json.loads(path.with_suffix(".json").read_text("utf-8"))
    kind = IncompleteFrameError if expected["result"] == "incomplete" else CorruptFrameError
    with pytest.raises(kind) as info:
        decode_frame(path.read_bytes())
    assert info.value.code == expected["code"]


@pytest.mark.parametrize("path", VALID + INVALID, ids=lambda p: p.stem)
def test_emulator_agrees_with_vectors(path: Path) -> None:
    """The independent EA emulator's checker gives the same verdicts on the vectors."""
    expected = json.loads(path.with_suffix(".json").read_text("utf-8"))
    result, code, parsed = ea_emulator.check_frame(path.read_bytes())
    if "payload" in expected:
        assert result == "ok"
        assert parsed == (expected["id"], expected["seq"], expected["payload"])
    else:
        assert (result, code) == (expected["result"], expected["code"])


def test_encoder_matches_valid_vector_bytes() -> None:
    """Encoding a vector's id, seq and payload reproduces its bytes exactly."""
    for path in VALID:
        data = path.read_bytes()
        frame = decode_frame(data)
        assert encode_frame(frame.id, frame.seq, frame.payload) == data


@settings(max_examples=examples(300), deadline=None)
@given(frame_id=ids, seq=seqs, obj=json_objects)
def test_any_payload_round_trips(frame_id: str, seq: int, obj: dict[str, object]) -> None:
    """Any JSON object round-trips through encode/decode unchanged."""
    payload = canonical_json(obj).encode("utf-8")
    frame = decode_frame(encode_frame(frame_id, seq, payload))
    assert (frame.id, frame.seq, frame.payload, frame.data) == (frame_id, seq, payload, obj)
    assert ea_emulator.check_frame(encode_frame(frame_id, seq, payload))[0] == "ok"


@settings(max_examples=examples(300), deadline=None)
@given(frame_id=ids, seq=seqs, obj=json_objects, data=st.data())
def test_any_truncation_is_incomplete(
    frame_id: str, seq: int, obj: dict[str, object], data: st.DataObject
) -> None:
    """Every strict prefix of a frame is 'incomplete', never a frame."""
    raw = encode_frame(frame_id, seq, canonical_json(obj).encode())
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(IncompleteFrameError):
        decode_frame(raw[:cut])


@settings(max_examples=examples(300), deadline=None)
@given(frame_id=ids, seq=seqs, obj=json_objects, data=st.data())
def test_any_byte_corruption_is_detected(
    frame_id: str, seq: int, obj: dict[str, object], data: st.DataObject
) -> None:
    """Changing any one byte to any other value makes the frame fail its checks."""
    raw = bytearray(encode_frame(frame_id, seq, canonical_json(obj).encode()))
    pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    value = data.draw(st.integers(min_value=0, max_value=255).filter(lambda v: v != raw[pos]))
    raw[pos] = value
    with pytest.raises(FrameError):
        decode_frame(bytes(raw))
    assert ea_emulator.check_frame(bytes(raw))[0] != "ok"


@settings(max_examples=examples(300), deadline=None)
@given(frame_id=ids, seq=seqs, obj=json_objects, data=st.data())
def test_burst_corruption_and_insertions_are_detected(
    frame_id: str, seq: int, obj: dict[str, object], data: st.DataObject
) -> None:
    """Overwriting a run of up to 4 bytes, or inserting/deleting bytes, is detected."""
    raw = encode_frame(frame_id, seq, canonical_json(obj).encode())
    pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    how = data.draw(st.sampled_from(["overwrite", "insert", "delete"]))
    chunk = data.draw(st.binary(min_size=1, max_size=4))
    if how == "overwrite":
        mutated = raw[:pos] + chunk + raw[pos + len(chunk) :]
    elif how == "insert":
        mutated = raw[:pos] + chunk + raw[pos:]
    else:
        mutated = raw[:pos] + raw[pos + len(chunk) :]
    if mutated == raw:
        return
    with pytest.raises(FrameError):
        decode_frame(mutated)


def test_oversized_file_is_refused_without_parsing() -> None:
    """A file larger than max_frame_bytes is 'too_large'."""
    raw = encode_frame("big", 1, b'{"x":"' + b"a" * 2000 + b'"}')
    with pytest.raises(CorruptFrameError) as info:
        decode_frame(raw, max_frame_bytes=1024)
    assert info.value.code == "too_large"


def test_encode_refuses_bad_ids() -> None:
    """Ids outside [A-Za-z0-9_-]{1,64} cannot be encoded (':' is not allowed on Windows)."""
    with pytest.raises(CorruptFrameError):
        encode_frame("a:b", 1, b"{}")
    with pytest.raises(CorruptFrameError):
        encode_frame("x" * 65, 1, b"{}")
