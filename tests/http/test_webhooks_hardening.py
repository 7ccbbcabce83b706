"""verify_webhook misuse and weak secrets (issue 13 weak spots): typed errors, a minimum key."""

from __future__ import annotations

import pytest

from fokha_integration.errors import ConfigError, FokhaError, ValidationError
from fokha_integration.http import (
    MIN_SECRET_BYTES,
    WebhookVerificationError,
    generate_webhook_secret,
    sign_webhook,
    verify_webhook,
    webhook_headers,
)

SECRET = generate_webhook_secret()
BODY = b'{"a":1}'


def _headers() -> dict[str, str]:
    return webhook_headers("id-1", BODY, SECRET, timestamp=1000)


def test_a_str_body_is_a_validation_error() -> None:
    """A decoded str body (a common mistake) raises ValidationError naming body, not TypeError."""
    with pytest.raises(ValidationError) as info:
        verify_webhook(_headers(), BODY.decode(), SECRET, now=1000)  # type: ignore[arg-type]
    assert info.value.field == "body"


@pytest.mark.parametrize("secret", [None, 42, [], ["whsec_%%%"]])
def test_a_missing_or_wrong_typed_secret_is_a_config_error(secret: object) -> None:
    """None, a number, an empty list or a malformed list entry: ConfigError naming secret."""
    with pytest.raises(ConfigError) as info:
        verify_webhook(_headers(), BODY, secret, now=1000)  # type: ignore[arg-type]
    assert info.value.field == "secret"


def test_none_headers_is_a_validation_error() -> None:
    """headers=None raises ValidationError naming headers, not AttributeError."""
    with pytest.raises(ValidationError) as info:
        verify_webhook(None, BODY, SECRET, now=1000)  # type: ignore[arg-type]
    assert info.value.field == "headers"


@pytest.mark.parametrize(
    "secret", ["password", b"abc", b"x" * (MIN_SECRET_BYTES - 1), "whsec_" + "QUJD"]
)
def test_weak_secrets_are_refused_everywhere(secret: str | bytes) -> None:
    """'password', a 3-byte key or anything under MIN_SECRET_BYTES: refused to sign and verify."""
    with pytest.raises(ConfigError) as info:
        sign_webhook("id", 1, BODY, secret)
    assert info.value.field == "secret" and "password" not in str(info.value)
    with pytest.raises(ConfigError):
        verify_webhook(_headers(), BODY, secret, now=1000)


def test_the_minimum_key_size_is_accepted() -> None:
    """A key of exactly MIN_SECRET_BYTES signs and verifies."""
    key = b"k" * MIN_SECRET_BYTES
    headers = webhook_headers("id-2", BODY, key, timestamp=5)
    assert verify_webhook(headers, BODY, key, now=5) == "id-2"


@pytest.mark.parametrize(
    "headers",
    [
        {"webhook-id": b"id", "webhook-timestamp": "1000", "webhook-signature": "v1,x"},
        {"webhook-id": "id", "webhook-timestamp": 1000, "webhook-signature": "v1,x"},
        {"webhook-id": "\udcff", "webhook-timestamp": "1000", "webhook-signature": "v1,x"},
        {"webhook-id": "id", "webhook-timestamp": "1000", "webhook-signature": "v1,\udcfe"},
        {1: "x", "webhook-id": "id"},
    ],
)
def test_odd_header_values_are_verification_errors(headers: dict[object, object]) -> None:
    """Bytes, numbers, undecodable text or non-str keys in headers: WebhookVerificationError."""
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, BODY, SECRET, now=1000)  # type: ignore[arg-type]


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -1, True, "300"])
def test_a_bad_tolerance_is_a_config_error(tolerance: object) -> None:
    """A NaN, infinite, negative, bool or str tolerance raises ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        verify_webhook(_headers(), BODY, SECRET, tolerance=tolerance, now=1000)  # type: ignore[arg-type]
    assert info.value.field == "tolerance"


def test_every_failure_is_a_fokha_error() -> None:
    """Whatever is wrong, the caller can catch FokhaError."""
    for args in ((None, BODY, SECRET), (_headers(), "s", SECRET), (_headers(), BODY, None)):
        with pytest.raises(FokhaError):
            verify_webhook(*args, now=1000)  # type: ignore[arg-type]
