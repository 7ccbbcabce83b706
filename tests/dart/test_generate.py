"""The generated Dart package: golden copy, syntax and structure gates, model changes."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the [dart] extra is not installed")
pytest.importorskip("tree_sitter_dart", reason="the [dart] extra is not installed")

from fokha_integration import cli
from fokha_integration.dart import generate, render
from fokha_integration.dart._check import check, structure_problems, syntax_problems
from fokha_integration.dart._generate import CHANNEL_PATTERN
from fokha_integration.errors import ConfigError
from fokha_integration.models import Model
from fokha_integration.ws import validate_channel

GOLDEN = Path(__file__).resolve().parents[2] / "clients" / "dart"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A freshly generated package in a temp dir."""
    out = tmp_path / "pkg"
    generate(out)
    return out


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"seed text {old!r} not found in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_golden_copy_is_reproduced_byte_for_byte() -> None:
    """Regenerating gives exactly the files checked in under clients/dart/."""
    rendered = render()
    on_disk = {
        str(p.relative_to(GOLDEN)): p.read_text(encoding="utf-8")
        for p in GOLDEN.rglob("*")
        if p.is_file()
    }
    assert sorted(on_disk) == sorted(rendered), "run `fokha dart generate clients/dart`"
    for rel, text in rendered.items():
        assert on_disk[rel] == text, f"{rel} differs: run `fokha dart generate clients/dart`"


def test_generation_is_deterministic() -> None:
    """Two renders give the same bytes."""
    assert render() == render()


def test_both_gates_pass_on_the_golden_copy() -> None:
    """The checked-in package has no syntax error and matches the Python side."""
    assert check(GOLDEN) == []


def test_syntax_gate_fails_on_broken_dart(package: Path) -> None:
    """A missing expression is reported with file, line and column."""
    _edit(package / "lib/src/rules.dart", "this.reconnectCap = 20.0,", "this.reconnectCap = ,")
    problems = syntax_problems(package)
    assert problems, "the syntax gate accepted broken Dart"
    assert problems[0].path.endswith("rules.dart")
    assert problems[0].line > 1
    assert re.match(r".*rules\.dart:\d+:\d+: syntax", str(problems[0]))


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        ("models.dart", "final double? entryPrice;", "final double entryPrice;", "entryPrice"),
        ("models.dart", "'stop_loss': stopLoss,", "'stoploss': stopLoss,", "toJson keys"),
        ("models.dart", "final String symbol;", "final String sym;", "symbol is missing"),
        (
            "protocol.dart",
            "rateLimited('rate_limited', temporary: true)",
            "rateLimited('rate_limited', temporary: false)",
            "rate_limited",
        ),
        (
            "protocol.dart",
            "authFailed(4500, reconnect: false,",
            "authFailed(4500, reconnect: true,",
            "4500",
        ),
        (
            "protocol.dart",
            "static const String hello = 'hello';",
            "static const String hello = 'helo';",
            "Ops.hello",
        ),
        (
            "api_client.dart",
            "hasKey || _rules.idempotentMethods.contains(method.toUpperCase())",
            "true",
            "mayRetry",
        ),
        (
            "api_client.dart",
            "if (!retryable || attempt + 1 >= _rules.retryAttempts) throw failure;\n"
            "      wait = parseRetryAfter",
            "if (attempt + 1 >= _rules.retryAttempts) throw failure;\n      wait = parseRetryAfter",
            "_pause",
        ),
        (
            "rules.dart",
            "'GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS'",
            "'GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'POST'",
            "idempotentMethods",
        ),
        (
            "api_client.dart",
            "idempotencyKey: idempotencyKey ?? newIdempotencyKey(),\n        query: null,\n"
            "        decode: (json) => PublishSignalResult",
            "idempotencyKey: null,\n        query: null,\n"
            "        decode: (json) => PublishSignalResult",
            "sends no Idempotency-Key",
        ),
        ("protocol.dart", "reason: 'draining'", "reason: 'drain'", "reason"),
        ("websocket_client.dart", "final Object? data;", "final dynamic data;", "dynamic"),
        ("websocket_client.dart", "_emitEvent(message);", "print(message);", "print"),
    ],
)
def test_structure_gate_fails_on_seeded_defects(
    package: Path, file: str, old: str, new: str, expected: str
) -> None:
    """Each seeded defect is caught by the structure gate and named in its message."""
    assert structure_problems(package) == []
    _edit(package / "lib" / "src" / file, old, new)
    problems = structure_problems(package)
    assert any(expected in p.message for p in problems), problems


def test_structure_gate_catches_a_non_exhaustive_switch(package: Path) -> None:
    """A switch over a sealed family that leaves a member out is reported."""
    example = package / "lib" / "src" / "probe.dart"
    example.write_text(
        "import 'websocket_client.dart';\n"
        "String describe(FokhaConnectionState s) => switch (s) {\n"
        "  Connecting() => 'connecting',\n  Connected() => 'connected',\n"
        "  Reconnecting() => 'reconnecting',\n};\n",
        encoding="utf-8",
    )
    problems = structure_problems(package)
    assert any("misses Disconnected" in p.message for p in problems), problems


@dataclass(frozen=True, slots=True, kw_only=True)
class _Probe(Model):
    """A throwaway model."""

    name: str
    ratio: float | None = None
    new_field: int = 0


def test_a_new_python_field_appears_in_dart(tmp_path: Path) -> None:
    """A field added to a model shows up with its Dart type, nullability and wire key."""
    files = render(models=(_Probe,))
    models = files["lib/src/models.dart"]
    assert "final class _Probe {" in models
    assert "final double? ratio;" in models
    assert "final int newField;" in models
    assert "'new_field': newField," in models
    assert "json.containsKey('new_field') ? _int('new_field', newFieldRaw) : 0" in models
    out = tmp_path / "probe"
    generate(out, models=(_Probe,))
    assert check(out, models=(_Probe,)) == []
    assert any("Signal is missing" in p.message for p in check(out))  # defaults absent


def test_channel_pattern_agrees_with_the_server() -> None:
    """The channel rule written into protocol.dart accepts exactly what the server accepts."""
    samples = [
        "prices.EURUSD",
        "acct:42.positions",
        "signals.trend-v2",
        "a",
        "x@y",
        "a..b",
        ".a",
        "a.",
        "a b",
        "é",
        "a/b",
        "A_B-C:D@E.f",
        "",
        "a.b.c.d",
    ]
    for name in samples:
        server_ok = validate_channel(name) is None
        assert (re.fullmatch(CHANNEL_PATTERN, name) is not None) == server_ok, name


def test_bad_package_name_is_a_config_error(tmp_path: Path) -> None:
    """A package name Dart would refuse is refused before anything is written."""
    with pytest.raises(ConfigError) as info:
        generate(tmp_path / "x", package="Bad-Name")
    assert info.value.field == "package"
    assert not (tmp_path / "x").exists()


def test_cli_generate_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fokha dart generate` writes and checks; `fokha dart check` fails on a broken tree."""
    out = tmp_path / "cli"
    assert cli.main(["dart", "generate", str(out)]) == 0
    assert "gates passed" in capsys.readouterr().out
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    _edit(
        broken / "lib/src/protocol.dart", "const int protocolVersion", "const int protocolVersion ="
    )
    assert cli.main(["dart", "check", str(broken)]) == 1
    assert "protocol.dart" in capsys.readouterr().err


def test_every_api_operation_has_a_typed_method() -> None:
    """Each operation of the REST API's OpenAPI document is a method of FokhaApiClient."""
    from fokha_integration.http import openapi_document

    client = render()["lib/src/api_client.dart"]
    for path, item in openapi_document(health=True)["paths"].items():
        for method, op in item.items():
            if op["operationId"] == "getOpenApi":
                continue
            assert f"> {op['operationId']}(" in client, (method, path)
            if method in ("post", "patch"):
                assert "idempotencyKey: idempotencyKey ?? newIdempotencyKey()" in client
