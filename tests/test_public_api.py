"""The public surface: ``__all__`` is sorted, importable and documented."""

from __future__ import annotations

import re
from pathlib import Path

import fokha_integration

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


def test_all_names_are_importable() -> None:
    """Every name in __all__ exists on the package."""
    missing = [n for n in fokha_integration.__all__ if not hasattr(fokha_integration, n)]
    assert missing == []


def test_all_is_unique() -> None:
    """__all__ has no duplicates (ruff's RUF022 keeps it sorted)."""
    names = fokha_integration.__all__
    assert len(names) == len(set(names))


def test_all_matches_reference_docs() -> None:
    """docs/reference.md documents exactly the names in __all__ (a ::: block or a list line)."""
    text = REFERENCE.read_text()
    listed = re.findall(r"^- `([^`]+)`", text, flags=re.MULTILINE)
    generated = re.findall(r"^::: fokha_integration(?:\.\w+)*\.(\w+)$", text, flags=re.MULTILINE)
    assert sorted(listed + generated) == sorted(fokha_integration.__all__)


def test_reference_blocks_name_the_defining_module() -> None:
    """Each ::: path in docs/reference.md resolves to the object the package exports."""
    import importlib

    text = REFERENCE.read_text()
    for path in re.findall(r"^::: (fokha_integration[\w.]*)$", text, flags=re.MULTILINE):
        module, _, name = path.rpartition(".")
        assert getattr(importlib.import_module(module), name) is getattr(fokha_integration, name)


def test_every_public_name_has_a_docstring() -> None:
    """Each exported class and function documents itself."""
    undocumented = [
        n
        for n in fokha_integration.__all__
        if callable(getattr(fokha_integration, n)) and not getattr(fokha_integration, n).__doc__
    ]
    assert undocumented == []
