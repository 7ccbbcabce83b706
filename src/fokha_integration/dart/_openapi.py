"""From the REST API's OpenAPI 3.1 document to the Dart client's operations.

Each operation becomes one typed method of ``FokhaApiClient``: path parameters are
required, query parameters optional and typed, a ``$ref`` request body takes the
generated model, and each JSON answer is decoded into a model (``$ref``) or a
generated ``<OperationId>Result`` class (an inline object). A POST/PATCH always
carries an ``Idempotency-Key``: the caller's, or one generated for the call and
reused on every retry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ._generate import camel

__all__ = ["operations_context"]

_SCALARS = {"string": "String", "integer": "int", "number": "double", "boolean": "bool"}
_UNSAFE = ("POST", "PATCH")


def _camel(name: str) -> str:
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    return parts[0][:1].lower() + parts[0][1:] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def _pascal(name: str) -> str:
    c = _camel(name)
    return c[:1].upper() + c[1:]


class _Types:
    """Maps JSON Schemas to Dart types, collecting result classes on the way."""

    def __init__(self, models: set[str]) -> None:
        self.models = models
        self.classes: list[dict[str, Any]] = []

    def dart(self, schema: Mapping[str, Any], owner: str) -> tuple[str, str]:
        """(Dart type, decode expression template with {v} for the raw value)."""
        ref = schema.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name in self.models:
                return name, f"{name}.fromJson(_asMap({{v}}, '{name}'))"
            return "Map<String, Object?>", f"_asMap({{v}}, '{name}')"
        kind = schema.get("type")
        nullable = False
        if isinstance(kind, list):
            nullable = "null" in kind
            rest = [k for k in kind if k != "null"]
            kind = rest[0] if len(rest) == 1 else None
        if "enum" in schema and kind is None:
            kind = "string"
        if kind in _SCALARS:
            base = _SCALARS[kind]
            decode = f"_as<{base}>({{v}})" if base != "double" else "_asDouble({v})"
        elif kind == "array":
            item_type, item_decode = self.dart(schema.get("items", {}), owner + "Item")
            base = f"List<{item_type}>"
            inner = item_decode.replace("{v}", "e")
            decode = f"_asList({{v}}).map((e) => {inner}).toList()"
        elif kind == "object" and schema.get("properties"):
            base = self.result_class(owner, schema)
            decode = f"{base}.fromJson(_asMap({{v}}, '{base}'))"
        elif kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
            value_type, value_decode = self.dart(schema["additionalProperties"], owner + "Value")
            base = f"Map<String, {value_type}>"
            inner = value_decode.replace("{v}", "e")  # Map.map passes (key, value)
            decode = (
                f"_asMap({{v}}, '{owner}').map((k, e) => MapEntry(k, {inner}))"
                if value_decode != "{v}"
                else f"_asMap({{v}}, '{owner}')"
            )
        elif kind == "object":
            base, decode = "Map<String, Object?>", f"_asMap({{v}}, '{owner}')"
        else:
            base, decode = "Object?", "{v}"
            return base, decode
        if nullable:
            return base + "?", f"{{v}} == null ? null : {decode}"
        return base, decode

    def result_class(self, name: str, schema: Mapping[str, Any]) -> str:
        required = set(schema.get("required", ()))
        fields = []
        for wire, prop in sorted(schema.get("properties", {}).items()):
            dart_type, decode = self.dart(prop, name + _pascal(wire))
            if wire not in required and not dart_type.endswith("?") and dart_type != "Object?":
                dart_type += "?"
                decode = f"{{v}} == null ? null : {decode}"
            fields.append(
                {
                    "wire": wire,
                    "name": camel(wire),
                    "type": dart_type,
                    "decode": decode.replace("{v}", f"json['{wire}']"),
                }
            )
        self.classes.append({"name": name, "fields": fields})
        return name


def operations_context(doc: Mapping[str, Any], models: set[str]) -> dict[str, Any]:
    """Template context: ``operations`` and ``result_classes`` for api_client.dart."""
    types = _Types(models)
    operations = []
    for path, item in sorted(doc.get("paths", {}).items()):
        for method, op in sorted(item.items()):
            if method.upper() not in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"):
                continue
            op_id = op.get("operationId") or _camel(f"{method} {path}")
            if op_id == "getOpenApi":
                continue
            params: list[str] = []
            path_expr = (
                "'"
                + re.sub(
                    r"\{([^}]+)\}",
                    lambda m: "${Uri.encodeComponent(" + _camel(m.group(1)) + ")}",
                    path,
                )
                + "'"
            )
            query = []
            key_param = False
            for p in op.get("parameters", []):
                where, name = p.get("in"), p.get("name", "")
                dart_type, _decode = types.dart(p.get("schema", {}), "Param")
                if where == "path":
                    params.append(f"required String {_camel(name)}")
                elif where == "query":
                    params.append(f"{dart_type.rstrip('?')}? {_camel(name)}")
                    query.append((name, _camel(name)))
                elif where == "header" and name.lower() == "idempotency-key":
                    key_param = True
            body = "null"
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content is not None:
                body_type, _ = types.dart(content.get("schema", {}), _pascal(op_id) + "Body")
                params.insert(0, f"required {body_type} body")
                body = "body.toJson()" if body_type in models else "body"
            unsafe = method.upper() in _UNSAFE
            if key_param or unsafe:
                params.append("String? idempotencyKey")
            key_expr = "idempotencyKey ?? newIdempotencyKey()" if (key_param or unsafe) else "null"
            ok = sorted(c for c in op.get("responses", {}) if str(c).startswith("2"))
            schema = {}
            for code in ok:
                media = op["responses"][code].get("content", {})
                json_media = media.get("application/json") or media.get("application/health+json")
                if json_media is not None:
                    schema = json_media.get("schema", {})
                    break
            result_type, decode = (
                types.dart(schema, _pascal(op_id) + "Result") if schema else ("Object?", "{v}")
            )
            query_expr = "null"
            if query:
                entries = ", ".join(f"if ({var} != null) '{wire}': '${var}'" for wire, var in query)
                query_expr = "<String, String>{" + entries + "}"
            operations.append(
                {
                    "name": op_id,
                    "summary": " ".join(str(op.get("summary", op_id)).split()),
                    "method": method.upper(),
                    "params": ("{" + ", ".join(params) + "}") if params else "",
                    "path_expr": path_expr,
                    "body_expr": body,
                    "key_expr": key_expr,
                    "query_expr": query_expr,
                    "result_type": result_type,
                    "decode": "(json) => " + decode.replace("{v}", "json"),
                }
            )
    return {"operations": operations, "result_classes": types.classes}
