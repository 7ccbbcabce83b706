"""The protocol table in code is the one source: the spec's tables, the enums and the
JSON Schemas must agree with it (a test fails when they drift)."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

from fokha_integration.ws import CloseCode, ErrorCode, is_reconnect_code
from fokha_integration.ws import protocol_table as table

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "docs" / "protocols" / "websocket.md"


def render_error_table() -> str:
    """The error-code table of the spec, as the table in code says it must read."""
    lines = ["| code | temporary | then close | when |", "|------|-----------|------------|------|"]
    for spec in table.ERROR_CODES:
        close = "—" if spec.close is None else str(spec.close)
        temporary = "yes" if spec.temporary else "no"
        lines.append(f"| `{spec.code}` | {temporary} | {close} | {spec.when} |")
    return "\n".join(lines)


def render_close_table() -> str:
    """The close-code table of the spec, as the table in code says it must read."""
    lines = [
        "| code | name | reconnect? | reason sent | meaning |",
        "|------|------|------------|-------------|---------|",
    ]
    for spec in table.CLOSE_CODES:
        reconnect = "yes" if spec.reconnect else "**no**"
        reason = f"`{spec.reason}`" if spec.reason else "—"
        lines.append(f"| {spec.code} | {spec.name} | {reconnect} | {reason} | {spec.meaning} |")
    return "\n".join(lines)


def render_op_list() -> str:
    """The op list line of the spec."""
    return "Ops: " + ", ".join(f"`{op.op}`" for op in table.CLIENT_OPS) + "."


def test_spec_tables_match_the_table_in_code() -> None:
    """The error table, close-code table and op list in the spec are exactly the code's."""
    text = SPEC.read_text()
    for rendered in (render_error_table(), render_close_table(), render_op_list()):
        assert rendered in text, f"docs/protocols/websocket.md drifted; expected:\n{rendered}"


def test_enums_match_the_table() -> None:
    """ErrorCode, its temporary flag, CloseCode and is_reconnect_code follow the table."""
    assert [c.value for c in ErrorCode] == [s.code for s in table.ERROR_CODES]
    for spec in table.ERROR_CODES:
        assert ErrorCode(spec.code).temporary is spec.temporary
    codes = {s.code: s for s in table.CLOSE_CODES}
    for member in CloseCode:
        assert codes[int(member)].name == member.name
    for spec in table.CLOSE_CODES:
        assert is_reconnect_code(spec.code) is spec.reconnect
    assert is_reconnect_code(None) is True
    assert is_reconnect_code(4321) is True
    assert is_reconnect_code(4999) is False


def test_table_loads_alone_without_websockets() -> None:
    """A generator can load the table as a plain file: no package import, no websockets."""
    path = Path(table.__file__)
    loaded = runpy.run_path(str(path))
    assert loaded["PROTOCOL_VERSION"] == 1
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "assert 'websockets' not in sys.modules and 'fokha_integration' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
