"""fokha serve's config: every error names file, line and key; secrets never printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fokha_integration.serve import ServeConfigError, load_config, parse_config, schema_reference
from fokha_integration.serve._cli import STARTER_CONFIG
from tests.support import free_port, timeout

DOCS = Path(__file__).resolve().parents[2] / "docs" / "serve.md"


def _error(text: str, env: dict[str, str] | None = None) -> ServeConfigError:
    with pytest.raises(ServeConfigError) as info:
        parse_config(text, path="fokha.toml", env=env or {})
    return info.value


def test_unknown_key_names_file_line_and_key() -> None:
    """A misspelt key is refused with its line."""
    err = _error("[server]\nhost = '127.0.0.1'\nhttp_prot = 8080\n")
    assert str(err).startswith("fokha.toml:3: server.http_prot: unknown key")
    assert err.line == 3
    assert err.field == "server.http_prot"


def test_wrong_type_names_the_key() -> None:
    """A string where a number belongs is refused with its line."""
    err = _error("[websocket]\n\nheartbeat = 'fast'\n")
    assert (err.line, err.field) == (3, "websocket.heartbeat")
    assert "number" in str(err)


def test_bool_is_not_a_port() -> None:
    """`true` is not a port number."""
    assert _error("[server]\nhttp_port = true\n").field == "server.http_port"


def test_missing_environment_variable() -> None:
    """`${VAR}` that is not set is an error naming the variable, not a silent empty string."""
    err = _error('[server]\nsecret = "${FOKHA_SECRET}"\n')
    assert "FOKHA_SECRET is not set" in str(err)
    assert err.line == 2


def test_secret_from_environment_is_used_and_redacted() -> None:
    """A secret taken from the environment is used but never shown by redacted()."""
    config = parse_config('[server]\nsecret = "${S}"\n', env={"S": "hunter2-very-secret"})
    assert config.server.secret == "hunter2-very-secret"
    assert "hunter2" not in repr(config.redacted())
    assert config.secrets() == ["hunter2-very-secret"]


def test_sinks_are_checked_one_by_one() -> None:
    """Errors inside [[sinks]] name the sink's index and line."""
    text = '[[sinks]]\nkind = "websocket"\n\n[[sinks]]\nkind = "webhook"\nurl = "ftp://x"\n'
    err = _error(text)
    assert (err.field, err.line) == ("sinks[1].url", 6)
    err = _error('[[sinks]]\nkind = "webhook"\nurl = "http://127.0.0.1:1/x"\n')
    assert err.field == "sinks[0].secret"
    err = _error('[[sinks]]\nkind = "pigeon"\n')
    assert err.field == "sinks[0].kind" and "one of" in str(err)


def test_open_host_needs_a_secret() -> None:
    """Listening beyond 127.0.0.1 without a token secret is refused."""
    assert _error('[server]\nhost = "0.0.0.0"\n').field == "server.secret"


def test_syntax_error_has_a_line() -> None:
    """A TOML syntax error names its line."""
    err = _error("[server]\nhost = \n")
    assert err.line == 2


def test_starter_config_is_valid() -> None:
    """`fokha init`'s file parses (with its secret variable set)."""
    config = parse_config(STARTER_CONFIG, env={"FOKHA_SECRET": "x" * 32})
    assert [s.kind for s in config.sinks] == ["websocket", "bridge"]


def test_docs_reference_is_generated_from_the_schema() -> None:
    """docs/serve.md holds the reference table exactly as schema_reference() writes it."""
    assert schema_reference() in DOCS.read_text(encoding="utf-8")


def _serve(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fokha_integration.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout(60),
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nstate_dir = 'state'\nbogus = 1\n", "server.bogus"),
        ("[server]\nstate_dir = 'state'\nws_port = 'x'\n", "server.ws_port"),
        ("[server]\nstate_dir = 'state'\nsecret = '${NOPE_NOT_SET}'\n", "server.secret"),
    ],
)
def test_bad_config_exits_2_and_starts_nothing(tmp_path: Path, text: str, key: str) -> None:
    """A bad file: one error line with file:line: key, exit code 2, nothing created."""
    (tmp_path / "fokha.toml").write_text(text, encoding="utf-8")
    result = _serve(["serve", "fokha.toml"], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("fokha serve: fokha.toml:") and f" {key}: " in lines[0]
    assert not (tmp_path / "state").exists()


def test_unreachable_redis_with_fail_closed_exits_2(tmp_path: Path) -> None:
    """A Redis store nobody answers on, with fail_mode closed, is refused before starting."""
    port = free_port()
    text = f"[server]\nstate_dir = 'state'\n[queue]\nstore = 'redis'\nurl = 'redis://127.0.0.1:{port}/0'\n"
    (tmp_path / "fokha.toml").write_text(text, encoding="utf-8")
    result = _serve(["serve", "fokha.toml"], tmp_path)
    assert result.returncode == 2
    assert "fokha.toml:5: queue.url:" in result.stderr
    assert not (tmp_path / "state").exists()


def test_init_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    """`fokha init` writes the starter file once; a second run needs --force."""
    assert _serve(["init"], tmp_path).returncode == 0
    assert (tmp_path / "fokha.toml").read_text(encoding="utf-8") == STARTER_CONFIG
    assert _serve(["init"], tmp_path).returncode == 2
    assert _serve(["init", "--force"], tmp_path).returncode == 0
    loaded = load_config(tmp_path / "fokha.toml", env={"FOKHA_SECRET": "s" * 32})
    assert loaded.source.endswith("fokha.toml")
