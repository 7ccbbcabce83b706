"""Every problem+json body the HTTP layer sends is valid against docs/protocols/schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema_rs  # comes with schemathesis (the dev extra)

from fokha_integration.http._problem import problem_body

ROOT = Path(__file__).parents[2]
SCHEMA = json.loads((ROOT / "docs" / "protocols" / "schemas" / "problem.schema.json").read_text())
SOURCES = sorted((ROOT / "src" / "fokha_integration" / "http").glob("*.py"))


def _codes_in_source() -> set[tuple[int, str]]:
    """(status, code) of every problem(...) / problem_body(...) / _client_error(...) call."""
    found = set()
    pattern = re.compile(r"(?:problem|problem_body|_client_error)\(\s*(\d{3}),\s*\"([a-z0-9_]+)\"")
    for path in SOURCES:
        found |= {(int(s), c) for s, c in pattern.findall(path.read_text())}
    return found


def test_every_problem_the_source_sends_validates() -> None:
    """All (status, code) pairs in src/fokha_integration/http give schema-valid documents."""
    validator = jsonschema_rs.validator_for(SCHEMA)
    codes = _codes_in_source()
    assert len(codes) >= 15
    for status, code in codes:
        doc = json.loads(problem_body(status, code, "t", "d", field="x"))
        assert validator.is_valid(doc), (status, code)


def test_every_code_is_documented() -> None:
    """Each problem code the source can send is listed in docs/protocols/http.md."""
    page = (ROOT / "docs" / "protocols" / "http.md").read_text()
    missing = sorted(c for _, c in _codes_in_source() if c not in page)
    assert missing == []
