"""Import cost: the package and its light modules import no network framework.

Each check runs in a fresh interpreter (a subprocess), because this test
process has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import fokha_integration

HEAVY = ("aiohttp", "websockets")
# Modules that must stay light: what a CLI call, a subprocess or a user who
# only wants dedup or a retry policy pays for.
LIGHT = (
    "fokha_integration",
    "fokha_integration.errors",
    "fokha_integration.models",
    "fokha_integration.dedup",
    "fokha_integration.resilience",
    "fokha_integration.clock",
    "fokha_integration.health",
    "fokha_integration.http",
    "fokha_integration.bridge",
)


def _imported_after(statement: str) -> list[str]:
    code = (
        f"import sys\n{statement}\n"
        f"print(__import__('json').dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return list(json.loads(out.stdout))


@pytest.mark.parametrize("module", LIGHT)
def test_light_module_imports_no_network_framework(module: str) -> None:
    """Importing a light module leaves aiohttp and websockets unimported."""
    assert _imported_after(f"import {module}") == []


def test_reading_a_name_imports_only_its_subpackage() -> None:
    """``fokha_integration.RetryPolicy`` imports resilience, not the WebSocket stack."""
    assert _imported_after("import fokha_integration as f; f.RetryPolicy; f.DedupCache") == []


def test_fokha_help_imports_no_network_framework() -> None:
    """``fokha --help`` builds its parser without importing every subcommand's package."""
    statement = (
        "import contextlib, io\n"
        "from fokha_integration.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])"
    )
    assert _imported_after(statement) == []


def test_every_lazy_name_resolves_to_its_module() -> None:
    """Each name in ``__all__`` is reachable and ``dir()`` lists it before first use."""
    assert set(fokha_integration.__all__) <= set(dir(fokha_integration))
    for name in fokha_integration.__all__:
        assert getattr(fokha_integration, name) is not None


def test_unknown_attribute_raises_attribute_error() -> None:
    """A misspelt name is an AttributeError (so ``hasattr`` and ``from x import y`` work)."""
    with pytest.raises(AttributeError, match="no_such_name"):
        fokha_integration.no_such_name  # noqa: B018
