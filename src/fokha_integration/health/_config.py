"""Health targets from a small TOML file (what ``fokha health`` reads).

::

    [defaults]              # optional; any Check option
    interval = 5
    timeout = 2

    [[check]]
    type = "http"           # http | tcp | websocket | redis | file
    url = "http://127.0.0.1:8080/health"
    name = "api"            # the component name (optional)
    expect_status = [200]
    max_latency = 0.5

    [[check]]
    type = "tcp"
    host = "127.0.0.1"
    port = 6379
    critical = false

Unknown keys are errors (a typo must not silently disable a check). The file is
read with ``tomllib`` (Python 3.11+) or, on 3.10, the ``tomli`` package (a
dependency there).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._checks import (
    Check,
    file_check,
    http_check,
    redis_check,
    tcp_check,
    websocket_check,
)

__all__ = ["MAX_CONFIG_BYTES", "MAX_TARGETS", "load_targets", "parse_targets"]

MAX_CONFIG_BYTES = 1 << 20
MAX_TARGETS = 10_000

_COMMON = {
    "interval": float,
    "jitter": float,
    "timeout": float,
    "critical": bool,
    "groups": list,
    "fail_after": int,
    "recover_after": int,
    "stale_after": float,
    "measurement": str,
}
_SPECIFIC: dict[str, dict[str, type]] = {
    "http": {"url": str, "expect_status": list, "max_latency": float, "method": str},
    "tcp": {"host": str, "port": int, "max_latency": float},
    "websocket": {"url": str, "ping": bool, "max_latency": float},
    "redis": {"url": str, "max_latency": float},
    "file": {"path": str, "max_age": float, "warn_age": float},
}
_REQUIRED = {
    "http": ("url",),
    "tcp": ("host", "port"),
    "websocket": ("url",),
    "redis": ("url",),
    "file": ("path", "max_age"),
}


def _typed(where: str, key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}.{key}", f"must be {kind.__name__}", value)
    return value


def parse_targets(doc: dict[str, Any]) -> list[Check]:
    """Checks from a parsed TOML document (see the module docstring)."""
    unknown_top = set(doc) - {"defaults", "check"}
    if unknown_top:
        raise ConfigError(sorted(unknown_top)[0], "unknown section; use [defaults] and [[check]]")
    defaults_raw = doc.get("defaults", {})
    if not isinstance(defaults_raw, dict):
        raise ConfigError("defaults", "must be a table", defaults_raw)
    entries = doc.get("check", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError("check", "add at least one [[check]] table", entries)
    if len(entries) > MAX_TARGETS:
        raise ConfigError("check", f"at most {MAX_TARGETS} checks", len(entries))
    defaults: dict[str, Any] = {}
    for key, value in defaults_raw.items():
        if key not in _COMMON:
            raise ConfigError(f"defaults.{key}", "unknown option", value)
        defaults[key] = _typed("defaults", key, value, _COMMON[key])
    checks: list[Check] = []
    for i, raw in enumerate(entries):
        where = f"check[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(where, "must be a table", raw)
        kind = raw.get("type")
        if kind not in _SPECIFIC:
            raise ConfigError(f"{where}.type", f"one of {', '.join(_SPECIFIC)}", kind)
        allowed = {**_COMMON, **_SPECIFIC[kind], "type": str, "name": str}
        opts: dict[str, Any] = dict(defaults)
        for key, value in raw.items():
            if key not in allowed:
                raise ConfigError(f"{where}.{key}", f"unknown option for a {kind} check", value)
            opts[key] = _typed(where, key, value, allowed[key])
        for key in _REQUIRED[kind]:
            if key not in opts:
                raise ConfigError(f"{where}.{key}", "is required", None)
        opts.pop("type")
        if "groups" in opts:
            opts["groups"] = frozenset(str(g) for g in opts["groups"])
        name = opts.pop("name", None)
        try:
            checks.append(_build(kind, name, opts))
        except TypeError as exc:
            raise ConfigError(where, str(exc), raw) from exc
    dupes = sorted(k for k, n in Counter(c.key for c in checks).items() if n > 1)
    if dupes:
        raise ConfigError("check", "two checks have the same name; set name =", dupes[0])
    return checks


def _build(kind: str, name: str | None, opts: dict[str, Any]) -> Check:
    if kind == "http":
        if "expect_status" in opts:
            opts["expect_status"] = tuple(int(s) for s in opts["expect_status"])
        return http_check(opts.pop("url"), component=name, **opts)
    if kind == "tcp":
        return tcp_check(opts.pop("host"), opts.pop("port"), component=name, **opts)
    if kind == "websocket":
        return websocket_check(opts.pop("url"), component=name, **opts)
    if kind == "redis":
        return redis_check(opts.pop("url"), component=name or "redis", **opts)
    return file_check(opts.pop("path"), component=name, **opts)


def load_targets(path: str | Path) -> list[Check]:
    """Checks from a TOML file (at most :data:`MAX_CONFIG_BYTES`)."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ConfigError("config", f"cannot read: {exc.strerror}", str(p)) from exc
    if size > MAX_CONFIG_BYTES:
        raise ConfigError("config", f"larger than {MAX_CONFIG_BYTES} bytes", size)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("config", "not UTF-8 text", str(p)) from exc
    return parse_targets(_loads(text, str(p)))


def _loads(text: str, name: str) -> dict[str, Any]:
    # tomllib from 3.11 on; the tomli package (a dependency on 3.10) before.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - 3.10 only
        import tomli as tomllib

    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"not valid TOML: {exc}", name) from exc
    return data
