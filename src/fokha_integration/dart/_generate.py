"""Build the Dart package's files from the Python side's models and protocol tables.

:func:`render` returns every file of the package as text (deterministic: the
same Python side always gives the same bytes); :func:`generate` writes them.
Templates are package data (``templates/*.jinja``), rendered with Jinja2 (the
``[dart]`` extra).
"""

from __future__ import annotations

import dataclasses
import keyword
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from .._client_rules import CLIENT_RULES, ClientRules
from .._version import __version__
from ..errors import ConfigError, FokhaError
from ..models import Envelope, Model, Notification, PriceTick, Signal, model_fields

__all__ = ["DEFAULT_MODELS", "generate", "render"]

DEFAULT_MODELS: tuple[type[Model], ...] = (Signal, PriceTick, Notification, Envelope)
"""The models the Dart package carries unless told otherwise."""

_PACKAGE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# Dart reserved words and built-in identifiers that cannot name a member.
_DART_RESERVED = frozenset(
    {
        "abstract",
        "as",
        "assert",
        "async",
        "await",
        "base",
        "break",
        "case",
        "catch",
        "class",
        "const",
        "continue",
        "covariant",
        "default",
        "deferred",
        "do",
        "dynamic",
        "else",
        "enum",
        "export",
        "extends",
        "extension",
        "external",
        "factory",
        "false",
        "final",
        "finally",
        "for",
        "function",
        "get",
        "hide",
        "if",
        "implements",
        "import",
        "in",
        "interface",
        "is",
        "late",
        "library",
        "mixin",
        "new",
        "null",
        "of",
        "on",
        "operator",
        "part",
        "required",
        "rethrow",
        "return",
        "sealed",
        "set",
        "show",
        "static",
        "super",
        "switch",
        "sync",
        "this",
        "throw",
        "true",
        "try",
        "type",
        "typedef",
        "var",
        "void",
        "when",
        "while",
        "with",
        "yield",
        "hashCode",
        "runtimeType",
        "toString",
        "noSuchMethod",
        "values",
        "index",
    }
)

_DART_TYPES = {
    "str": "String",
    "int": "int",
    "float": "double",
    "datetime": "DateTime",
    "object": "Map<String, Object?>",
}

CHANNEL_PATTERN = r"^[A-Za-z0-9_\-:@]+(\.[A-Za-z0-9_\-:@]+)*$"
"""The channel-name rule written into protocol.dart (a test checks it against the server's)."""


class DartGenerationError(FokhaError):
    """A model or table cannot be expressed in Dart."""


def camel(name: str) -> str:
    """``close_buy``/``CLOSE_BUY`` -> ``closeBuy``; reserved words get a ``Value`` suffix."""
    parts = [p for p in re.split(r"[_\-.\s]+", name) if p]
    if not parts:
        raise DartGenerationError(f"cannot make a Dart name from {name!r}")
    first, rest = parts[0].lower(), [p[:1].upper() + p[1:].lower() for p in parts[1:]]
    result = first + "".join(rest)
    if not result[0].isalpha():
        result = "v" + result
    if result in _DART_RESERVED or keyword.iskeyword(result):
        result += "Value"
    return result


def _dart_string(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\").replace("'", "\\'").replace("$", "\\$").replace("\n", "\\n")
    )
    return f"'{escaped}'"


def _doc(text: str) -> str:
    return " ".join(text.split()) or ""


@dataclasses.dataclass(frozen=True)
class _Field:
    wire: str
    name: str
    kind: str
    type: str
    nullable: bool
    enum: str | None
    default: str | None
    decode: str
    encode: str
    doc: str


def _default_literal(f: dataclasses.Field[Any], kind: str, enum: type[Enum] | None) -> str | None:
    if f.default is not dataclasses.MISSING:
        value = f.default
        if value is None:
            return "null"
        if isinstance(value, Enum):
            return f"{type(value).__name__}.{camel(str(value.value))}"
        if isinstance(value, str):
            return _dart_string(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int) and kind == "int":
            return str(value)
        if isinstance(value, (int, float)) and kind == "float":
            return repr(float(value))
        raise DartGenerationError(f"no Dart literal for the default of {f.name!r}: {value!r}")
    if f.default_factory is dict:
        return "const <String, Object?>{}"
    return None  # a factory default (a new id, "now"): the wire must carry it


def _decode(wire: str, kind: str, enum: str | None, nullable: bool, default: str | None) -> str:
    raw = f"{camel(wire)}Raw"
    quoted = _dart_string(wire)
    base = {
        "str": f"_string({quoted}, {raw})",
        "int": f"_int({quoted}, {raw})",
        "float": f"_double({quoted}, {raw})",
        "datetime": f"_parseDateTime({quoted}, {raw})",
        "object": f"_object({quoted}, {raw})",
        "enum": f"{enum}.fromWire(_string({quoted}, {raw}))",
    }[kind]
    if nullable:
        base = f"{raw} == null ? null : {base}"
        if default in (None, "null"):
            return base  # a missing optional key reads as null, which is its default
        base = f"({base})"
    if default is not None:
        return f"json.containsKey({quoted}) ? {base} : {default}"
    return base


def _encode(name: str, kind: str, nullable: bool) -> str:
    if kind == "datetime":
        return (
            f"{name} == null ? null : formatDateTime({name}!)"
            if nullable
            else f"formatDateTime({name})"
        )
    if kind == "enum":
        return f"{name}?.wire" if nullable else f"{name}.wire"
    return name


def _model_context(
    models: Sequence[type[Model]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    enums: dict[str, type[Enum]] = {}
    out = []
    for cls in models:
        dc_fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        fields = []
        for info in model_fields(cls):
            enum_name = None
            if info.kind == "enum":
                assert info.enum is not None
                enum_name = info.enum.__name__
                enums[enum_name] = info.enum
                dart_type = enum_name
            else:
                dart_type = _DART_TYPES[info.kind]
            default = _default_literal(dc_fields[info.name], info.kind, info.enum)
            name = camel(info.name)
            fields.append(
                _Field(
                    wire=info.name,
                    name=name,
                    kind=info.kind,
                    type=dart_type + ("?" if info.optional else ""),
                    nullable=info.optional,
                    enum=enum_name,
                    default=default,
                    decode=_decode(info.name, info.kind, enum_name, info.optional, default),
                    encode=_encode(name, info.kind, info.optional),
                    doc=_doc(info.doc),
                )
            )
        out.append(
            {"name": cls.__name__, "doc": _doc(cls.__doc__ or cls.__name__), "fields": fields}
        )
    enum_ctx = [
        {
            "name": name,
            "doc": _doc(enum.__doc__ or name),
            "members": [{"dart": camel(str(m.value)), "wire": str(m.value)} for m in enum],
        }
        for name, enum in sorted(enums.items())
    ]
    return out, enum_ctx


def _protocol_context() -> dict[str, Any]:
    # The protocol's one table (plain data) and the server's limits.
    from ..ws import Limits, Mode, is_reconnect_code
    from ..ws import protocol_table as table

    if any(is_reconnect_code(c) for c in range(4500, 5000)) or not all(
        is_reconnect_code(c) for c in range(4000, 4500)
    ):
        raise DartGenerationError("close-code ranges changed: update protocol.dart.jinja")
    limits = dataclasses.asdict(Limits())
    limits.update(max_channel_length=128, max_id_length=64, max_token_length=4096)
    return {
        "protocol_version": table.PROTOCOL_VERSION,
        "generator_version": __version__,
        "ops": [op.op for op in table.CLIENT_OPS],
        "frame_types": list(table.SERVER_FRAME_TYPES),
        "message_kinds": list(table.MESSAGE_KINDS),
        "modes": [m.value for m in Mode],
        "error_codes": [{"wire": e.code, "temporary": e.temporary} for e in table.ERROR_CODES],
        "close_codes": [
            {"name": c.name, "code": c.code, "reconnect": c.reconnect, "reason": c.reason}
            for c in table.CLOSE_CODES
        ],
        "no_reconnect_standard": [c for c in range(1000, 1016) if not is_reconnect_code(c)],
        "permanent_range": (4500, 4999),
        "channel_pattern": CHANNEL_PATTERN,
        "limits": sorted(limits.items()),
    }


def _rules_context(rules: ClientRules) -> list[dict[str, str]]:
    out = []
    for f in dataclasses.fields(rules):
        value = getattr(rules, f.name)
        if isinstance(value, tuple):
            if all(isinstance(v, int) for v in value):
                dart_type, literal = "List<int>", "<int>[" + ", ".join(map(str, value)) + "]"
            else:
                dart_type = "List<String>"
                literal = "<String>[" + ", ".join(_dart_string(str(v)) for v in value) + "]"
        elif isinstance(value, float):
            dart_type, literal = "double", repr(value)
        elif isinstance(value, int):
            dart_type, literal = "int", str(value)
        else:  # pragma: no cover - the table holds numbers and tuples only
            raise DartGenerationError(f"no Dart type for rule {f.name!r}")
        out.append(
            {"name": camel(f.name), "type": dart_type, "literal": literal, "doc": f.metadata["doc"]}
        )
    return out


def _environment() -> Any:
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "dart", "the Dart generator needs Jinja2: pip install 'fokha-integration[dart]'"
        ) from exc
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fokha_integration.dart", "templates"),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - Dart source, not HTML
    )
    env.filters["camel"] = camel
    return env


# Output path -> template name; files with no Jinja in them are templates too.
_FILES = {
    "pubspec.yaml": "pubspec.yaml.jinja",
    "analysis_options.yaml": "analysis_options.yaml.jinja",
    "README.md": "README.md.jinja",
    "CHANGELOG.md": "CHANGELOG.md.jinja",
    "lib/{package}.dart": "library.dart.jinja",
    "lib/src/models.dart": "models.dart.jinja",
    "lib/src/protocol.dart": "protocol.dart.jinja",
    "lib/src/rules.dart": "rules.dart.jinja",
    "lib/src/websocket_client.dart": "websocket_client.dart.jinja",
    "lib/src/api_client.dart": "api_client.dart.jinja",
    "test/models_test.dart": "models_test.dart.jinja",
    "test/protocol_test.dart": "protocol_test.dart.jinja",
    "test/fixtures/models.json": "fixtures_models.json.jinja",
    "example/main.dart": "example_main.dart.jinja",
}


def render(
    *,
    package: str = "fokha_client",
    models: Sequence[type[Model]] = DEFAULT_MODELS,
    rules: ClientRules = CLIENT_RULES,
    openapi: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Every file of the Dart package: relative path -> text.

    ``openapi`` is the REST API's OpenAPI document (default: the one
    :func:`fokha_integration.http.openapi_document` builds from the API's routes).
    """
    if not isinstance(package, str) or not _PACKAGE_RE.match(package):
        raise ConfigError("package", "must be a Dart package name ([a-z][a-z0-9_]*)", package)
    from ._fixtures import model_fixtures
    from ._openapi import operations_context

    model_ctx, enum_ctx = _model_context(models)
    context = {
        "package": package,
        "models": model_ctx,
        "enums": enum_ctx,
        "rules": _rules_context(rules),
        "model_fixtures": model_fixtures(models),
        **operations_context(
            openapi if openapi is not None else _default_openapi(), {cls.__name__ for cls in models}
        ),
        **_protocol_context(),
    }
    env = _environment()
    return {
        path.format(package=package): env.get_template(template).render(**context)
        for path, template in _FILES.items()
    }


def _default_openapi() -> Mapping[str, Any]:
    try:
        from ..http import openapi_document
    except ImportError:  # the HTTP layer is not in this build: no operations
        return {}
    doc: Mapping[str, Any] = openapi_document(health=True)
    return doc


def generate(
    out_dir: str | Path,
    *,
    package: str = "fokha_client",
    models: Sequence[type[Model]] = DEFAULT_MODELS,
) -> list[Path]:
    """Write the Dart package into ``out_dir``; returns the files written, sorted.

    Files the generator does not own are left alone; its own are overwritten.
    """
    root = Path(out_dir)
    written = []
    for rel, text in sorted(render(package=package, models=models).items()):
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8", newline="\n")
        written.append(target)
    return written


def iter_dart_files(root: str | Path) -> Iterable[Path]:
    """Every ``.dart`` file under ``root``, sorted."""
    return sorted(Path(root).rglob("*.dart"))
