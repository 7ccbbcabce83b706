"""The OpenAPI 3.1 document of the REST API app, generated from its routes and models.

The app's routes are declared once, as :class:`Operation` records (method, path,
scope, request model, response schema, statuses); :func:`api_app` mounts handlers for
them and :func:`openapi_document` turns them, with each model's
:func:`~fokha_integration.models.model_fields`, into the document served at
``/openapi.json`` and written by ``fokha api openapi``. JSON Schema dialect: 2020-12
(OpenAPI 3.1's own). No I/O, no aiohttp.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._version import __version__
from ..models import FieldInfo, Model, Signal, model_fields
from .idempotency import MAX_KEY_LENGTH

__all__ = ["OPERATIONS", "Operation", "model_schema", "openapi_document", "openapi_json"]

PROBLEM = {"$ref": "#/components/schemas/Problem"}


@dataclass(frozen=True, slots=True)
class Operation:
    """One route of the API: what it needs and what it answers."""

    method: str
    path: str
    operation_id: str
    summary: str
    scope: str | None
    ok_status: int
    ok_schema: dict[str, Any]
    request_model: type[Model] | None = None
    idempotency: str = "off"
    path_params: tuple[str, ...] = ()
    query: tuple[tuple[str, dict[str, Any]], ...] = ()
    errors: tuple[int, ...] = ()
    extra_ok: tuple[tuple[int, str], ...] = field(default_factory=tuple)


_SIGNAL = {"$ref": "#/components/schemas/Signal"}
_PUBLISH = {
    "type": "object",
    "required": ["status", "id", "key"],
    "properties": {
        "status": {"enum": ["accepted", "duplicate", "conflict"]},
        "id": {"type": "string"},
        "key": {"type": "string"},
    },
}
_SINK_STATE = {
    "type": "object",
    "required": ["state"],
    "properties": {
        "state": {"enum": ["accepted", "dead_letter"]},
        "reason": {"type": ["string", "null"]},
        "detail": {"type": ["string", "null"]},
    },
}
_ID_PARAM = {"type": "string", "pattern": "^[0-9A-Za-z_.:-]{1,64}$"}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/signals",
        "publishSignal",
        "Publish a signal into the queue (Idempotency-Key required)",
        "signals:write",
        201,
        _PUBLISH,
        request_model=Signal,
        idempotency="required",
        errors=(400, 409, 413, 415, 422, 503),
        extra_ok=((200, "A duplicate of an earlier signal: the original result"),),
    ),
    Operation(
        "GET",
        "/v1/signals",
        "listSignals",
        "Recent signals published through this API, newest first, cursor-paged",
        "signals:read",
        200,
        {
            "type": "object",
            "required": ["items", "next_cursor"],
            "properties": {
                "items": {"type": "array", "items": _SIGNAL},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        query=(
            ("cursor", {"type": "string", "maxLength": 64}),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
        ),
        errors=(400,),
    ),
    Operation(
        "GET",
        "/v1/signals/{id}",
        "getSignal",
        "One signal and its state per sink",
        "signals:read",
        200,
        {
            "type": "object",
            "required": ["signal", "sinks"],
            "properties": {
                "signal": _SIGNAL,
                "sinks": {"type": "object", "additionalProperties": _SINK_STATE},
            },
        },
        path_params=("id",),
        errors=(404,),
    ),
    Operation(
        "GET",
        "/v1/positions",
        "getPositions",
        "The EA's latest positions snapshot (through the FileBridge)",
        "positions:read",
        200,
        {
            "type": "object",
            "required": ["positions", "seq", "sent_at"],
            "properties": {
                "positions": {"type": "array", "items": {"type": "object"}},
                "seq": {"type": "integer"},
                "sent_at": {"type": "number"},
            },
        },
        errors=(503,),
    ),
    Operation(
        "GET",
        "/v1/dead-letters",
        "listDeadLetters",
        "The oldest dead letters, with reasons",
        "dead_letters:read",
        200,
        {
            "type": "object",
            "required": ["items"],
            "properties": {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["ref", "sink", "reason", "detail", "envelope_id"],
                        "properties": {
                            "ref": {"type": "string"},
                            "sink": {"type": "string"},
                            "reason": {"type": "string"},
                            "detail": {"type": "string"},
                            "envelope_id": {"type": "string"},
                            "dead_at": {"type": "number"},
                        },
                    },
                }
            },
        },
        query=(
            ("sink", {"type": "string", "maxLength": 64}),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
        ),
        errors=(400,),
    ),
    Operation(
        "POST",
        "/v1/dead-letters/{id}/replay",
        "replayDeadLetter",
        "Send one dead letter again (its envelope id is unchanged)",
        "dead_letters:write",
        200,
        {
            "type": "object",
            "required": ["replayed"],
            "properties": {"replayed": {"type": "integer", "minimum": 0}},
        },
        idempotency="optional",
        path_params=("id",),
        errors=(400, 404, 409, 422),
    ),
)
"""Every route of the API app (health routes and ``/openapi.json`` are added apart)."""


_POSITIVE = {"exclusiveMinimum": 0}
_CONSTRAINTS: dict[str, dict[str, dict[str, Any]]] = {
    # What each model's own checks refuse, per field, as far as JSON Schema can say
    # it. Where a model rule is looser than any sane client needs (symbols: printable,
    # no white space), the schema states a safe subset. Cross-field rules (stop loss
    # below entry for BUY, expires_at after created_at) cannot be written here; the
    # API answers 422 problem+json naming the field.
    "Signal": {
        "id": {"pattern": "^[0-9A-Za-z_.:-]{1,64}$"},
        "symbol": {"pattern": "^[A-Z][A-Z0-9._]{0,31}$"},
        "volume": _POSITIVE,
        "entry_price": _POSITIVE,
        "stop_loss": _POSITIVE,
        "take_profit": _POSITIVE,
        "confidence": {"minimum": 0, "maximum": 1},
        "strategy": {"maxLength": 128},
        "metadata": {"maxProperties": 16},
    },
}


def _field_schema(info: FieldInfo) -> dict[str, Any]:
    if info.kind == "enum":
        assert info.enum is not None
        schema: dict[str, Any] = {"enum": [member.value for member in info.enum]}
        if info.optional:
            schema["enum"] = [*schema["enum"], None]
    else:
        base = {
            "str": {"type": "string"},
            "int": {"type": "integer"},
            "float": {"type": "number"},
            "datetime": {"type": "string", "format": "date-time"},
            "object": {"type": "object"},
        }[info.kind]
        schema = dict(base)
        if info.optional:
            schema["type"] = [schema["type"], "null"]
    if info.doc:
        schema["description"] = info.doc
    return schema


def model_schema(cls: type[Model]) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a model, from :func:`model_fields`."""
    fields = model_fields(cls)
    extra = _CONSTRAINTS.get(cls.__name__, {})
    return {
        "type": "object",
        "description": (cls.__doc__ or "").strip().split("\n")[0],
        "properties": {f.name: {**_field_schema(f), **extra.get(f.name, {})} for f in fields},
        "required": [f.name for f in fields if f.required],
        "additionalProperties": False,
    }


_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string"},
    },
}

_ERROR_TEXT = {
    400: "Malformed request (problem+json)",
    401: "Missing or invalid bearer token",
    403: "The token lacks this route's scope",
    404: "Not found",
    409: "A request with this Idempotency-Key is still in progress",
    413: "Body too large",
    415: "Body is not JSON",
    422: "Invalid body, or an Idempotency-Key reused with another request",
    503: "Not available now (nothing was done; retry, with the same Idempotency-Key)",
}


def _operation(op: Operation) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _ID_PARAM}
        for name in op.path_params
    ]
    params += [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in op.query
    ]
    if op.idempotency != "off":
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": op.idempotency == "required",
                "description": "Unique per logical operation; retried requests reuse it.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_KEY_LENGTH,
                    "pattern": "^[!#-~][ -~]*$",
                },
            }
        )
    responses: dict[str, Any] = {
        str(op.ok_status): {
            "description": "OK",
            "content": {"application/json": {"schema": op.ok_schema}},
        }
    }
    for status, text in op.extra_ok:
        responses[str(status)] = {
            "description": text,
            "content": {"application/json": {"schema": op.ok_schema}},
        }
    problem_content = {"application/problem+json": {"schema": PROBLEM}}
    for status in sorted({*op.errors, *((401, 403) if op.scope else ())}):
        responses[str(status)] = {"description": _ERROR_TEXT[status], "content": problem_content}
    doc: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "parameters": params,
        "responses": responses,
    }
    if op.scope is not None:
        doc["security"] = [{"bearer": [op.scope]}]
        doc["x-scope"] = op.scope
    if op.request_model is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{op.request_model.__name__}"}
                }
            },
        }
    return doc


def openapi_document(
    operations: Sequence[Operation] = OPERATIONS,
    *,
    title: str = "fokha-integration API",
    health: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``operations`` (plus the health routes when mounted)."""
    paths: dict[str, dict[str, Any]] = {}
    models: dict[str, type[Model]] = {"Signal": Signal}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
        if op.request_model is not None:
            models[op.request_model.__name__] = op.request_model
    paths["/openapi.json"] = {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document",
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}
            },
        }
    }
    if health:
        health_op = {
            "summary": "Health (application/health+json)",
            "responses": {
                "200": {"description": "pass or warn", "content": {"application/health+json": {}}},
                "503": {"description": "fail", "content": {"application/health+json": {}}},
            },
        }
        paths["/health"] = {"get": {"operationId": "getHealth", **health_op}}
    schemas: dict[str, Any] = {name: model_schema(cls) for name, cls in sorted(models.items())}
    schemas["Problem"] = _PROBLEM_SCHEMA
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {"title": title, "version": __version__},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "fokha HMAC tokens (TokenAuthenticator); "
                    "the token's channel patterns are its scopes.",
                }
            },
        },
    }


def openapi_json(**kwargs: Any) -> str:
    """:func:`openapi_document` as stable, indented JSON text (for committing)."""
    return json.dumps(openapi_document(**kwargs), indent=2, sort_keys=True) + "\n"
