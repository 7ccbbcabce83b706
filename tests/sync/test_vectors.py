"""Protocol vectors (tests/vectors/sync) run against the service; bodies checked by the schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fokha_integration.sync import Limits, MemorySyncStore, SyncConfig, SyncService

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests/vectors/sync/cases.json").read_text())
SCHEMAS = ROOT / "docs/protocols/schemas/sync"
# Server configuration, cursor contents and id order are beyond what a schema says.
BEYOND_SCHEMA = {
    "unknown_collection",
    "pull_unknown_collection",
    "pull_bad_cursor",
    "non_increasing",
}


def validator(name: str) -> Any:
    """A 2020-12 validator for one schema file, with the sibling files resolvable."""
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    resources = []
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], referencing.Resource.from_contents(schema)))
    registry = referencing.Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def subset(expected: Any, actual: Any, path: str = "$") -> None:
    """Assert ``expected`` is contained in ``actual`` (objects as subsets, lists element-wise)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing"
            subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), path
        assert len(expected) == len(actual), f"{path}: {len(actual)} items"
        for i, (e, a) in enumerate(zip(expected, actual)):
            subset(e, a, f"{path}[{i}]")
    else:
        assert expected == actual, f"{path}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
async def test_vector(case: dict[str, Any]) -> None:
    """The server answers each vector as written, and the answer matches its schema."""
    cfg = VECTORS["config"]
    svc = SyncService(
        MemorySyncStore(),
        cfg["collections"],
        config=SyncConfig(limits=Limits(max_mutations=cfg["max_mutations"])),
        wall=lambda: cfg["wall"],
    )
    await svc.start()
    for body in case.get("setup", []):
        status, _ = await svc.handle("push", json.dumps(body).encode())
        assert status == 200
    raw = case["body_text"].encode() if "body_text" in case else json.dumps(case["body"]).encode()
    status, answer = await svc.handle(case["route"], raw)
    decoded = json.loads(answer)
    assert status == case["status"], decoded
    subset(case["expect"], decoded)
    if status == 200:
        validator(f"{case['route']}-request.json").validate(case["body"])
        validator(f"{case['route']}-response.json").validate(decoded)
    else:
        validator("problem.json").validate(decoded)
        assert decoded["status"] == status


def test_schemas_refuse_what_the_server_refuses() -> None:
    """Every 400 vector body with a JSON object is also invalid by the request schema."""
    for case in VECTORS["cases"]:
        if (
            case["status"] == 400
            and isinstance(case.get("body"), dict)
            and case["expect"]["field"] != "mutations"
        ):
            schema = validator(f"{case['route']}-request.json")
            if case["name"] in BEYOND_SCHEMA:
                continue  # server configuration and cursor contents are beyond a schema
            assert not schema.is_valid(case["body"]), case["name"]
