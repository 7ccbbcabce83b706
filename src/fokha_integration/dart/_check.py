"""Gates for a generated Dart package, run without a Dart SDK.

No Dart SDK can be installed on our machines, so the generated package is checked
with the tree-sitter Dart grammar (``tree-sitter-dart``, pinned in the ``[dart]``
extra):

1. **Syntax**: every ``.dart`` file parses with no ERROR or MISSING node.
2. **Structure**: each model class has the Python model's fields, wire keys and
   nullability; every error code, close code and op of the server's table is in
   ``protocol.dart`` with the same value; the REST client retries nothing that is
   neither idempotent nor keyed; every ``switch`` over a sealed family names every
   member (or has a default); no ``dynamic``; no ``print``.

What these gates cannot see (types, inference, behaviour) is for ``dart analyze``
and ``dart test`` in the app's own CI; the generated README lists the commands.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._client_rules import CLIENT_RULES
from ..errors import ConfigError
from ..models import Model, model_fields
from ._generate import _DART_TYPES, CHANNEL_PATTERN, DEFAULT_MODELS, camel

__all__ = ["Problem", "check", "structure_problems", "syntax_problems"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where, and what is wrong."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


def _parser() -> Any:
    try:
        import tree_sitter
        import tree_sitter_dart
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "dart", "the Dart gates need tree-sitter-dart: pip install 'fokha-integration[dart]'"
        ) from exc
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_dart.language()))


def _walk(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def _text(node: Any) -> str:
    return bytes(node.text).decode("utf-8")


def _string_value(node: Any) -> str:
    text = _text(node)
    return text[1:-1] if len(text) >= 2 and text[0] in "'\"" else text


def _problem(path: Path, node: Any, message: str) -> Problem:
    line, column = node.start_point
    return Problem(str(path), line + 1, column + 1, message)


def _parse(path: Path) -> Any:
    return _parser().parse(path.read_bytes()).root_node


def syntax_problems(root: str | Path) -> list[Problem]:
    """ERROR and MISSING nodes in every ``.dart`` file under ``root``."""
    problems = []
    for path in sorted(Path(root).rglob("*.dart")):
        for node in _walk(_parse(path)):
            if node.is_missing:
                problems.append(_problem(path, node, f"syntax: missing {node.type!r}"))
            elif node.is_error:
                snippet = _text(node)[:40].replace("\n", " ")
                problems.append(_problem(path, node, f"syntax: cannot parse {snippet!r}"))
    return problems


def _named_children(node: Any, kind: str) -> list[Any]:
    return [c for c in node.children if c.type == kind]


def _class_bodies(tree: Any, kind: str = "class_definition") -> dict[str, Any]:
    out = {}
    for node in _walk(tree):
        if node.type == kind:
            name = next((c for c in node.children if c.type == "identifier"), None)
            body = next((c for c in node.children if c.type in ("class_body", "enum_body")), None)
            if name is not None and body is not None:
                out[_text(name)] = body
    return out


def _fields(body: Any) -> dict[str, tuple[str, Any]]:
    """Field name -> (type text, node) for the ``final`` fields of a class body."""
    out = {}
    for decl in _named_children(body, "declaration"):
        if not _named_children(decl, "final_builtin"):
            continue
        names = [
            _text(i)
            for lst in _named_children(decl, "initialized_identifier_list")
            for ii in lst.children
            if ii.type == "initialized_identifier"
            for i in ii.children
            if i.type == "identifier"
        ]
        type_text = "".join(
            _text(c)
            for c in decl.children
            if c.type in ("type_identifier", "type_arguments", "nullable_type")
        )
        for name in names:
            out[name] = (type_text, decl)
    return out


def _method_body(body: Any, name: str) -> Any | None:
    children = body.children
    for i, child in enumerate(children):
        if child.type == "method_signature" and any(
            n.type == "identifier" and _text(n) == name for n in _walk(child)
        ):
            following = children[i + 1] if i + 1 < len(children) else None
            return (
                following if following is not None and following.type == "function_body" else None
            )
    return None


def _check_models(path: Path, tree: Any, models: Sequence[type[Model]]) -> list[Problem]:
    problems: list[Problem] = []
    classes = _class_bodies(tree)
    for cls in models:
        body = classes.get(cls.__name__)
        if body is None:
            problems.append(Problem(str(path), 1, 1, f"model class {cls.__name__} is missing"))
            continue
        fields = _fields(body)
        to_json = _method_body(body, "toJson")
        keys = (
            [
                _string_value(pair.children[0])
                for pair in _walk(to_json)
                if pair.type == "pair" and pair.children[0].type == "string_literal"
            ]
            if to_json is not None
            else []
        )
        expected_keys = [info.name for info in model_fields(cls)]
        if keys != expected_keys:
            problems.append(
                _problem(path, body, f"{cls.__name__}.toJson keys {keys} != {expected_keys}")
            )
        for info in model_fields(cls):
            name = camel(info.name)
            if name not in fields:
                problems.append(_problem(path, body, f"{cls.__name__}.{name} is missing"))
                continue
            type_text, node = fields[name]
            base = info.enum.__name__ if info.enum is not None else _DART_TYPES[info.kind]
            expected = base + ("?" if info.optional else "")
            if type_text.replace(" ", "") != expected.replace(" ", ""):
                problems.append(
                    _problem(path, node, f"{cls.__name__}.{name}: {type_text} != {expected}")
                )
        extra = set(fields) - {camel(i.name) for i in model_fields(cls)}
        if extra:
            problems.append(
                _problem(path, body, f"{cls.__name__} has extra fields {sorted(extra)}")
            )
    return problems


def _enum_constants(body: Any) -> dict[str, tuple[list[Any], dict[str, str], Any]]:
    """Enum constant -> (positional argument nodes, named argument texts, node)."""
    out = {}
    for const in _named_children(body, "enum_constant"):
        name = _text(const.children[0])
        positional: list[Any] = []
        named: dict[str, str] = {}
        for node in _walk(const):
            if node.type == "argument":
                positional.append(node.children[0])
            elif node.type == "named_argument":
                label = _text(node.children[0]).rstrip(":").strip()
                named[label] = _text(node.children[-1])
        out[name] = (positional, named, const)
    return out


def _check_protocol(path: Path, tree: Any) -> list[Problem]:
    from ..ws import protocol_table as table

    problems: list[Problem] = []
    enums = _class_bodies(tree, "enum_declaration")
    classes = _class_bodies(tree)
    errors = _enum_constants(enums.get("ErrorCode", tree))
    for code in table.ERROR_CODES:
        entry = errors.get(camel(code.code))
        temporary = "true" if code.temporary else "false"
        if entry is None or not entry[0] or _string_value(entry[0][0]) != code.code:
            problems.append(Problem(str(path), 1, 1, f"ErrorCode {code.code!r} missing or wrong"))
        elif entry[1].get("temporary") != temporary:
            problems.append(
                _problem(path, entry[2], f"ErrorCode {code.code}: temporary != {temporary}")
            )
    closes = _enum_constants(enums.get("CloseCodes", tree))
    for close in table.CLOSE_CODES:
        entry = closes.get(camel(close.name))
        reconnect = "true" if close.reconnect else "false"
        if entry is None or not entry[0] or _text(entry[0][0]) != str(close.code):
            problems.append(
                Problem(str(path), 1, 1, f"close code {close.name}={close.code} missing or wrong")
            )
        elif entry[1].get("reconnect") != reconnect:
            problems.append(
                _problem(path, entry[2], f"close code {close.code}: reconnect != {reconnect}")
            )
        elif entry[1].get("reason") != f"'{close.reason}'":
            problems.append(
                _problem(path, entry[2], f"close code {close.code}: reason != {close.reason!r}")
            )
    ops = [op.op for op in table.CLIENT_OPS]
    expected_consts = (
        ("Ops", ops),
        ("FrameTypes", table.SERVER_FRAME_TYPES),
        ("MessageKinds", table.MESSAGE_KINDS),
    )
    for cls_name, names in expected_consts:
        body = classes.get(cls_name)
        values = (
            {
                _text(d.children[0]): _string_value(d.children[-1])
                for d in _walk(body)
                if d.type == "static_final_declaration"
            }
            if body is not None
            else {}
        )
        for name in names:
            if values.get(camel(name)) != name:
                problems.append(Problem(str(path), 1, 1, f"{cls_name}.{camel(name)} != {name!r}"))
    source = path.read_text(encoding="utf-8")
    if f"const int protocolVersion = {table.PROTOCOL_VERSION};" not in source:
        problems.append(
            Problem(str(path), 1, 1, f"protocolVersion is not {table.PROTOCOL_VERSION}")
        )
    if f"RegExp(r'{CHANNEL_PATTERN}')" not in source:
        problems.append(Problem(str(path), 1, 1, "channelPattern differs from the server's rule"))
    return problems


def _check_rest(path: Path, tree: Any) -> list[Problem]:
    """The retry rule: only idempotent methods or keyed requests are ever retried."""
    problems: list[Problem] = []
    client = _class_bodies(tree).get("FokhaApiClient")
    if client is None:
        return [Problem(str(path), 1, 1, "FokhaApiClient is missing")]
    may_retry = _method_body(client, "mayRetry")
    expected = "hasKey || _rules.idempotentMethods.contains(method.toUpperCase())"
    if may_retry is None or expected not in " ".join(_text(may_retry).split()):
        problems.append(_problem(path, client, f"mayRetry must be exactly `{expected}`"))
    # Every unsafe operation sends an Idempotency-Key (so its retries are safe too).
    for node in _walk(client):
        if node.type != "arguments":
            continue
        args = [c for c in node.children if c.type in ("argument", "named_argument")]
        if not args or args[0].type != "argument":
            continue
        method = _string_value(args[0].children[0]).upper()
        if method not in ("POST", "PATCH"):
            continue
        for arg in args[1:]:
            if (
                arg.type == "named_argument"
                and _text(arg.children[0]).startswith("idempotencyKey")
                and _text(arg.children[-1]).strip() == "null"
            ):
                problems.append(
                    _problem(path, arg, f"a {method} operation sends no Idempotency-Key")
                )
    # Every retry (a call of _pause) must follow a guard that gives up when not retryable.
    for node in _walk(client):
        if (
            node.type == "identifier"
            and _text(node) == "_pause"
            and node.parent is not None
            and node.parent.type != "function_signature"
        ):
            block = node.parent
            while block is not None and block.type != "block":
                block = block.parent
            guard_seen = False
            for statement in block.children if block is not None else []:
                if statement.start_byte >= node.start_byte:
                    break
                if statement.type == "if_statement" and "!retryable" in _text(statement):
                    guard_seen = True
            if not guard_seen:
                problems.append(
                    _problem(path, node, "a retry (_pause) without a `!retryable` guard")
                )
    return problems


def _check_rules(path: Path) -> list[Problem]:
    source = path.read_text(encoding="utf-8")
    methods = "<String>[" + ", ".join(f"'{m}'" for m in CLIENT_RULES.idempotent_methods) + "]"
    if f"this.idempotentMethods = {methods}" not in source:
        return [Problem(str(path), 1, 1, f"idempotentMethods must default to {methods}")]
    return []


def _check_common(path: Path, tree: Any, families: dict[str, set[str]]) -> list[Problem]:
    problems = []
    for node in _walk(tree):
        if node.type in ("type_identifier", "identifier") and _text(node) == "dynamic":
            problems.append(_problem(path, node, "`dynamic` is not allowed (use Object?)"))
        if node.type == "identifier" and _text(node) == "print":
            sibling = node.next_sibling
            if sibling is not None and sibling.type == "selector":
                problems.append(_problem(path, node, "`print` is not allowed in lib/"))
        if node.type in ("switch_statement", "switch_expression"):
            cases = [
                c
                for c in _walk(node)
                if c.type in ("switch_statement_case", "switch_expression_case")
                and c.parent is not None
                and (c.parent == node or c.parent.parent == node)
            ]
            named = set()
            has_default = any(c.type == "switch_statement_default" for c in _walk(node))
            for case in cases:
                pattern = next((c for c in case.children if c.type.endswith("pattern")), None)
                if pattern is None:
                    continue
                if pattern.type == "object_pattern":
                    named.add(_text(pattern.children[0]))
                elif _text(pattern).strip() == "_":
                    has_default = True
            for family, members in families.items():
                if named & members and not has_default and not members <= named:
                    missing = sorted(members - named)
                    problems.append(
                        _problem(path, node, f"switch over {family} misses {', '.join(missing)}")
                    )
    return problems


def _sealed_families(trees: Sequence[Any]) -> dict[str, set[str]]:
    sealed: set[str] = set()
    parents: dict[str, str] = {}
    for tree in trees:
        for node in _walk(tree):
            if node.type != "class_definition":
                continue
            name = next((_text(c) for c in node.children if c.type == "identifier"), "")
            if any(c.type == "sealed" for c in node.children):
                sealed.add(name)
            superclass = next((c for c in node.children if c.type == "superclass"), None)
            if superclass is not None:
                parent = next((c for c in superclass.children if c.type == "type_identifier"), None)
                if parent is not None:
                    parents[name] = _text(parent)
    return {s: {child for child, p in parents.items() if p == s} for s in sealed}


def structure_problems(
    root: str | Path,
    *,
    package: str = "fokha_client",
    models: Sequence[type[Model]] = DEFAULT_MODELS,
) -> list[Problem]:
    """The structure gate (see the module docstring) on the package under ``root``."""
    base = Path(root)
    src = base / "lib" / "src"
    problems: list[Problem] = []
    trees = {path: _parse(path) for path in sorted((base / "lib").rglob("*.dart"))}
    families = _sealed_families(list(trees.values()))
    for path, tree in trees.items():
        problems.extend(_check_common(path, tree, families))
    required = {
        "models.dart": lambda p, t: _check_models(p, t, models),
        "protocol.dart": _check_protocol,
        "api_client.dart": _check_rest,
    }
    for name, checker in required.items():
        path = src / name
        if path not in trees:
            problems.append(Problem(str(path), 1, 1, "file is missing"))
            continue
        problems.extend(checker(path, trees[path]))
    rules = src / "rules.dart"
    problems.extend(
        _check_rules(rules) if rules.exists() else [Problem(str(rules), 1, 1, "file is missing")]
    )
    library = base / "lib" / f"{package}.dart"
    if library not in trees:
        problems.append(Problem(str(library), 1, 1, "library file is missing"))
    return problems


def check(
    root: str | Path,
    *,
    package: str = "fokha_client",
    models: Sequence[type[Model]] = DEFAULT_MODELS,
) -> list[Problem]:
    """Both gates; an empty list means the package passed."""
    return syntax_problems(root) + structure_problems(root, package=package, models=models)
