"""The ``fokha serve`` configuration: one TOML file, validated before anything starts.

Every error names the file, the line and the key (``fokha.toml:12: sinks[1].url:
must be an http(s) URL``) and is a :class:`ServeConfigError` (a ``ConfigError``),
so ``fokha serve`` exits with code 2 and starts nothing. Values may be taken from
the environment with ``${VAR}``; a missing variable is an error, and secret values
are never printed (:meth:`ServeConfig.redacted`).

The schema is the dataclasses below; :func:`schema_reference` renders it as the
Markdown table in ``docs/serve.md`` (a test keeps the two in step).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast, get_args, get_origin, get_type_hints

from .. import _validate as v
from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "ApiSection",
    "BridgeSection",
    "ConsoleSection",
    "HealthSection",
    "QueueSection",
    "ServeConfig",
    "ServeConfigError",
    "ServerSection",
    "SinkSection",
    "SyncSection",
    "WebSocketSection",
    "load_config",
    "parse_config",
    "schema_reference",
]

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_MARK = "secret"  # noqa: S105 - the metadata key, not a password


class ServeConfigError(ConfigError):
    """A config file entry is invalid; ``path``, ``line`` and ``field`` (the key) say where."""

    def __init__(self, path: str, line: int | None, key: str, reason: str) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(key, reason, None)
        self.args = (f"{where}: {key}: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


def _doc(text: str, *, secret: bool = False) -> dict[str, Any]:
    return {"doc": text, _SECRET_MARK: secret}


@dataclass(frozen=True, slots=True)
class ServerSection:
    """``[server]``: where the hub listens and keeps its state."""

    host: str = field(default="127.0.0.1", metadata=_doc("Address for HTTP and WebSocket."))
    http_port: int = field(
        default=8080, metadata=_doc("REST API, console, health, /metrics (0: any free port).")
    )
    ws_port: int = field(default=8765, metadata=_doc("WebSocket server port (0: any free port)."))
    state_dir: str = field(default=".fokha", metadata=_doc("SQLite files and the instance lock."))
    secret: str = field(
        default="",
        metadata=_doc(
            "HMAC secret for tokens (use ${VAR}); empty: no auth, 127.0.0.1 only.", secret=True
        ),
    )
    shutdown_deadline: float = field(
        default=10.0, metadata=_doc("Seconds SIGTERM waits for the drain.")
    )


@dataclass(frozen=True, slots=True)
class WebSocketSection:
    """``[websocket]``: the streaming server for apps and browsers."""

    heartbeat: float = field(default=15.0, metadata=_doc("Idle seconds before a heartbeat frame."))
    allow_publish: bool = field(default=False, metadata=_doc("Let clients publish."))


@dataclass(frozen=True, slots=True)
class BridgeSection:
    """``[bridge]``: the file bridge to the MT5 Expert Advisor."""

    enabled: bool = field(default=True, metadata=_doc("Run the file bridge."))
    path: str = field(
        default="auto",
        metadata=_doc(
            'Bridge folder, "auto" (find the MT5 terminal) or "emulator" (the bundled EA emulator).'
        ),
    )
    fail_after: float = field(
        default=10.0, metadata=_doc("Seconds without an EA heartbeat before its check fails.")
    )


@dataclass(frozen=True, slots=True)
class QueueSection:
    """``[queue]``: the durable outbox between producers and sinks."""

    store: str = field(default="sqlite", metadata=_doc('"sqlite", "memory" or "redis".'))
    url: str = field(
        default="", metadata=_doc("Redis URL when store is redis (use ${VAR}).", secret=True)
    )
    fail_mode: str = field(
        default="closed", metadata=_doc('Dedup when its backend is down: "closed" or "open".')
    )


@dataclass(frozen=True, slots=True)
class SinkSection:
    """``[[sinks]]``: where signals go. ``kind`` is websocket, bridge or webhook."""

    kind: str = field(default="", metadata=_doc("websocket | bridge | webhook."))
    name: str = field(default="", metadata=_doc("Sink name (default: the kind)."))
    channel: str = field(default="signals", metadata=_doc("WebSocket channel (kind websocket)."))
    url: str = field(default="", metadata=_doc("Webhook URL (kind webhook)."))
    secret: str = field(
        default="", metadata=_doc("Webhook signing secret (use ${VAR}).", secret=True)
    )
    attempts: int = field(default=5, metadata=_doc("Delivery attempts before the dead letters."))


@dataclass(frozen=True, slots=True)
class HealthSection:
    """``[health]``: how often the parts are checked."""

    interval: float = field(default=2.0, metadata=_doc("Seconds between checks."))


@dataclass(frozen=True, slots=True)
class ApiSection:
    """``[api]``: the REST API the Flutter app calls (``/v1/...``, ``/openapi.json``)."""

    enabled: bool = field(default=True, metadata=_doc("Serve the REST API."))


@dataclass(frozen=True, slots=True)
class SyncSection:
    """``[sync]``: record sync for the app's local store (``/sync/v1/pull|push``)."""

    enabled: bool = field(default=False, metadata=_doc("Serve the sync protocol."))
    collections: str = field(
        default="watchlists,alerts,notes",
        metadata=_doc("Comma-separated collection names."),
    )


@dataclass(frozen=True, slots=True)
class ConsoleSection:
    """``[console]``: the web console at /console."""

    enabled: bool = field(default=True, metadata=_doc("Serve the console."))


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """The whole file."""

    server: ServerSection = field(default_factory=ServerSection)
    websocket: WebSocketSection = field(default_factory=WebSocketSection)
    bridge: BridgeSection = field(default_factory=BridgeSection)
    queue: QueueSection = field(default_factory=QueueSection)
    sinks: tuple[SinkSection, ...] = (
        SinkSection(kind="websocket", name="app"),
        SinkSection(kind="bridge", name="ea"),
    )
    health: HealthSection = field(default_factory=HealthSection)
    api: ApiSection = field(default_factory=ApiSection)
    sync: SyncSection = field(default_factory=SyncSection)
    console: ConsoleSection = field(default_factory=ConsoleSection)
    source: str = "<defaults>"
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, key: str) -> int | None:
        """The line of a dotted key (``queue.url``, ``sinks[1].url``) in the source file."""
        return self.lines.get(key)

    def redacted(self) -> dict[str, Any]:
        """The config as a dict with every secret replaced by ``"***"`` (for logs and pages)."""

        def scrub(obj: Any) -> Any:
            if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
                out = {}
                for f in dataclasses.fields(cast(Any, obj)):
                    value = getattr(obj, f.name)
                    secret = f.metadata.get(_SECRET_MARK, False)
                    out[f.name] = "***" if secret and value else scrub(value)
                return out
            if isinstance(obj, tuple):
                return [scrub(x) for x in obj]
            return obj

        result: dict[str, Any] = scrub(self)
        return result

    def secrets(self) -> list[str]:
        """Every non-empty secret value (tests grep pages and logs for them)."""
        found = []
        sections: list[Any] = [self.server, self.queue, *self.sinks]
        for section in sections:
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if f.metadata.get(_SECRET_MARK) and value:
                    found.append(str(value))
        return found


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerSection,
    "websocket": WebSocketSection,
    "bridge": BridgeSection,
    "queue": QueueSection,
    "health": HealthSection,
    "api": ApiSection,
    "sync": SyncSection,
    "console": ConsoleSection,
}
_CHOICES = {
    ("queue", "store"): ("sqlite", "memory", "redis"),
    ("queue", "fail_mode"): ("closed", "open"),
    ("sinks", "kind"): ("websocket", "bridge", "webhook"),
}


class _Lines:
    """Finds the line of a key in TOML text (tomllib reports none for valid files)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")

    def __init__(self, text: str) -> None:
        self._index: dict[tuple[str, int | None, str | None], int] = {}
        table: tuple[str, int | None] = ("", None)
        counts: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                name = header.group(2)
                if header.group(1) == "[[":
                    index = counts.get(name, 0)
                    counts[name] = index + 1
                    table = (name, index)
                else:
                    table = (name, None)
                self._index.setdefault((table[0], table[1], None), number)
                continue
            key = self._KEY.match(line)
            if key:
                self._index.setdefault((table[0], table[1], key.group(1)), number)

    def find(self, table: str, index: int | None = None, key: str | None = None) -> int | None:
        return self._index.get((table, index, key)) or self._index.get((table, index, None))

    def dotted(self) -> dict[str, int]:
        """Every key found, as ``table.key`` / ``table[i].key`` -> line."""
        out = {}
        for (table, index, key), line in self._index.items():
            label = f"{table}[{index}]" if index is not None else table
            out[label if key is None else (f"{label}.{key}" if label else key)] = line
        return out


def _expand(value: Any, where: str, path: str, line: int | None, env: Mapping[str, str]) -> Any:
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ServeConfigError(path, line, where, f"environment variable {name} is not set")
        return env[name]

    return _ENV_RE.sub(sub, value)


def _coerce(
    cls: type[Any],
    raw: Mapping[str, Any],
    table: str,
    index: int | None,
    path: str,
    lines: _Lines,
    env: Mapping[str, str],
) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    label = f"{table}[{index}]" if index is not None else table
    for key in raw:
        if key not in names:
            known = ", ".join(sorted(names))
            raise ServeConfigError(
                path,
                lines.find(table, index, key),
                f"{label}.{key}",
                f"unknown key (known: {known})",
            )
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        line = lines.find(table, index, f.name)
        where = f"{label}.{f.name}"
        value = _expand(raw[f.name], where, path, line, env)
        expected = hints[f.name]
        try:
            if expected is bool:
                value = v.boolean(where, value)
            elif expected is int:
                value = v.integer(where, value, minimum=0)
            elif expected is float:
                value = v.non_negative(where, value)
            elif expected is str:
                value = v.string(where, value, non_empty=False)
            choices = _CHOICES.get((table, f.name))
            if choices is not None:
                v.one_of(where, value, choices)
        except ConfigError as exc:
            raise ServeConfigError(path, line, where, exc.reason + f" (got {value!r})") from None
        values[f.name] = value
    return cls(**values)


def parse_config(
    text: str, *, path: str = "<string>", env: Mapping[str, str] | None = None
) -> ServeConfig:
    """Parse and validate config text; raises :class:`ServeConfigError` naming file, line, key."""
    environ = os.environ if env is None else env
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ServeConfigError(
            path, int(match.group(1)) if match else None, "<syntax>", str(exc)
        ) from None
    lines = _Lines(text)
    known = {*_SECTIONS, "sinks"}
    for key in data:
        if key not in known:
            raise ServeConfigError(
                path,
                lines.find(key) or lines.find("", None, key),
                key,
                f"unknown section (known: {', '.join(sorted(known))})",
            )
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ServeConfigError(path, lines.find("", None, name), name, "must be a table")
        sections[name] = _coerce(cls, raw, name, None, path, lines, environ)
    if "sinks" in data:
        raw_sinks = data["sinks"]
        if not isinstance(raw_sinks, list) or not all(isinstance(s, dict) for s in raw_sinks):
            raise ServeConfigError(path, lines.find("sinks"), "sinks", "must be [[sinks]] tables")
        sinks = []
        seen: set[str] = set()
        for i, raw in enumerate(raw_sinks):
            sink = _coerce(SinkSection, raw, "sinks", i, path, lines, environ)
            line = lines.find("sinks", i, None)
            if not sink.kind:
                raise ServeConfigError(path, line, f"sinks[{i}].kind", "is required")
            if sink.kind == "webhook" and not sink.url.startswith(("http://", "https://")):
                raise ServeConfigError(
                    path,
                    lines.find("sinks", i, "url"),
                    f"sinks[{i}].url",
                    "must be an http(s) URL for a webhook sink",
                )
            if sink.kind == "webhook" and not sink.secret:
                raise ServeConfigError(
                    path,
                    lines.find("sinks", i, None),
                    f"sinks[{i}].secret",
                    "is required for a webhook sink (use ${VAR})",
                )
            if sink.kind == "webhook":
                from ..http import sign_webhook

                try:
                    sign_webhook("probe", 0, b"", sink.secret)
                except ConfigError as exc:
                    raise ServeConfigError(
                        path, lines.find("sinks", i, "secret"), f"sinks[{i}].secret", exc.reason
                    ) from None
            if sink.attempts < 1:
                raise ServeConfigError(
                    path, lines.find("sinks", i, "attempts"), f"sinks[{i}].attempts", "must be >= 1"
                )
            name = sink.name or sink.kind
            if name in seen:
                raise ServeConfigError(
                    path,
                    lines.find("sinks", i, "name"),
                    f"sinks[{i}].name",
                    f"duplicate sink name {name!r}",
                )
            seen.add(name)
            sinks.append(dataclasses.replace(sink, name=name))
        sections["sinks"] = tuple(sinks)
    config = ServeConfig(**sections, source=path, lines=lines.dotted())
    if config.queue.store == "redis" and not config.queue.url:
        raise ServeConfigError(
            path, lines.find("queue", None, "store"), "queue.url", "is required when store is redis"
        )
    names = [c.strip() for c in config.sync.collections.split(",")]
    if config.sync.enabled and (not all(names) or len(set(names)) != len(names)):
        raise ServeConfigError(
            path,
            lines.find("sync", None, "collections"),
            "sync.collections",
            "must be distinct, non-empty names separated by commas",
        )
    if config.server.host not in ("127.0.0.1", "localhost", "::1") and not config.server.secret:
        raise ServeConfigError(
            path,
            lines.find("server", None, "host"),
            "server.secret",
            "is required when listening beyond 127.0.0.1",
        )
    for key in ("http_port", "ws_port"):
        port = getattr(config.server, key)
        if port > 65535:
            raise ServeConfigError(
                path, lines.find("server", None, key), f"server.{key}", "must be <= 65535"
            )
    return config


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> ServeConfig:
    """Read and validate a config file (see :func:`parse_config`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeConfigError(str(p), None, "<file>", f"cannot read: {exc}") from None
    return parse_config(text, path=str(p), env=env)


def schema_reference() -> str:
    """The config reference as Markdown (one table per section), from the dataclasses."""
    out = []
    tables: list[tuple[str, type[Any]]] = [*_SECTIONS.items(), ("sinks", SinkSection)]
    for name, cls in tables:
        header = f"[[{name}]]" if name == "sinks" else f"[{name}]"
        out.append(f"### `{header}`\n\n{(cls.__doc__ or '').split(':', 1)[-1].strip()}\n")
        out.append("| key | type | default | meaning |\n|-----|------|---------|---------|")
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            type_name = tp.__name__ if get_origin(tp) is None else str(get_args(tp))
            default = f.default if f.default is not dataclasses.MISSING else ""
            secret = " Secret: never printed." if f.metadata.get(_SECRET_MARK) else ""
            out.append(
                f"| `{f.name}` | {type_name} | `{default!r}` | {f.metadata['doc']}{secret} |"
            )
        out.append("")
    return "\n".join(out)
