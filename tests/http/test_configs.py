"""The HTTP layer's config objects refuse NaN, infinities, bools and wrong types by name."""

from __future__ import annotations

from typing import Any

import pytest

from fokha_integration.errors import ConfigError
from fokha_integration.http import (
    ApiAppConfig,
    ApiClientConfig,
    IdempotencyConfig,
    WebhookReceiverConfig,
)

BAD_NUMBERS = [float("nan"), float("inf"), -float("inf"), True, "1", None, -1]

CASES: list[tuple[type[Any], str, list[Any]]] = [
    (IdempotencyConfig, "lease", [*BAD_NUMBERS, 0]),
    (IdempotencyConfig, "retention", [*BAD_NUMBERS, 0]),
    (IdempotencyConfig, "max_body", [*BAD_NUMBERS, 1.5, 0]),
    (IdempotencyConfig, "default_rule", ["always", None, 1]),
    (IdempotencyConfig, "methods", [{"POST"}, frozenset({"post"}), None]),
    (IdempotencyConfig, "namespace", ["", "a b", None]),
    (WebhookReceiverConfig, "tolerance", BAD_NUMBERS),
    (WebhookReceiverConfig, "lease", [*BAD_NUMBERS, 0]),
    (WebhookReceiverConfig, "max_body", [*BAD_NUMBERS, 1.5, 0]),
    (WebhookReceiverConfig, "replay_ttl", [float("nan"), float("inf"), True, "1", 0, 1]),
    (ApiClientConfig, "attempt_timeout", [*BAD_NUMBERS, 0]),
    (ApiClientConfig, "rate", [float("nan"), float("inf"), True, "1", 0, -1]),
    (ApiClientConfig, "max_response_bytes", [*BAD_NUMBERS, 1.5, 0]),
    (ApiClientConfig, "retry", [None, 3, "retry"]),
    (ApiAppConfig, "max_body", [*BAD_NUMBERS, 1.5, 0]),
    (ApiAppConfig, "recent_limit", [*BAD_NUMBERS, 1.5, 0]),
]


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [(cls, field, value) for cls, field, values in CASES for value in values],
)
def test_bad_settings_raise_config_error_naming_the_field(
    cls: type[Any], field: str, value: Any
) -> None:
    """Each bad value raises ConfigError whose field is the setting's name."""
    with pytest.raises(ConfigError) as info:
        cls(**{field: value})
    assert info.value.field == field
