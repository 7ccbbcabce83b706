"""Standard Webhooks signing and verification."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fokha_integration.errors import ConfigError
from fokha_integration.http import (
    WebhookVerificationError,
    generate_webhook_secret,
    sign_webhook,
    verify_webhook,
    webhook_headers,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_signature_matches_the_spec_formula() -> None:
    """v1, + base64(HMAC-SHA256(base64-decoded key, id.timestamp.body))."""
    body = b'{"a":1}'
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, b"msg_1.1674087231." + body, hashlib.sha256).digest()
    assert sign_webhook("msg_1", 1674087231, body, SECRET) == "v1," + base64.b64encode(mac).decode()


def test_verify_accepts_a_fresh_signed_message() -> None:
    """A message signed now verifies and returns its webhook-id."""
    body = b'{"x":"y"}'
    headers = webhook_headers("id-1", body, SECRET)
    assert verify_webhook(headers, body, SECRET) == "id-1"


def test_verify_accepts_any_matching_signature_of_several() -> None:
    """With key rotation, one matching v1 signature among several is enough."""
    body = b"{}"
    headers = webhook_headers("id-2", body, SECRET, timestamp=1000)
    other = sign_webhook("id-2", 1000, body, generate_webhook_secret())
    headers["webhook-signature"] = f"{other} {headers['webhook-signature']}"
    assert verify_webhook(headers, body, SECRET, now=1000) == "id-2"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda h, b: (h, b + b" "), "bad_signature"),
        (lambda h, b: ({**h, "webhook-id": "other"}, b), "bad_signature"),
        (lambda h, b: ({**h, "webhook-timestamp": "1"}, b), "stale_timestamp"),
        (lambda h, b: ({**h, "webhook-timestamp": "12a"}, b), "bad_timestamp"),
        (lambda h, b: ({**h, "webhook-timestamp": "\u00b2"}, b), "bad_timestamp"),
        (lambda h, b: ({**h, "webhook-timestamp": "\u0661\u0662\u0663"}, b), "bad_timestamp"),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
            "missing_header",
        ),
        (lambda h, b: ({**h, "webhook-signature": "v1," + "A" * 5000}, b), "bad_signature"),
    ],
)
def test_verify_rejects_tampering(mutate: object, code: str) -> None:
    """Tampered body, id or timestamp, or missing headers, are rejected with a code."""
    body = b'{"v":1}'
    headers, body2 = mutate(webhook_headers("id-3", body, SECRET), body)  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook(headers, body2, SECRET)
    assert info.value.code == code


def test_a_wrong_secret_is_rejected() -> None:
    """A signature made with another secret does not verify."""
    body = b"{}"
    headers = webhook_headers("id-4", body, generate_webhook_secret())
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, body, SECRET)


def test_header_names_are_case_insensitive() -> None:
    """Header lookup ignores case, as HTTP does."""
    body = b"{}"
    headers = {k.title(): v for k, v in webhook_headers("id-5", body, SECRET).items()}
    assert verify_webhook(headers, body, SECRET) == "id-5"


def test_malformed_secrets_are_refused() -> None:
    """A secret that is not base64 raises ConfigError, without echoing the secret."""
    with pytest.raises(ConfigError) as info:
        sign_webhook("a", 1, b"", "whsec_***not-base64***")
    assert "not-base64" not in str(info.value)
    assert generate_webhook_secret().startswith("whsec_")


@given(
    msg_id=st.text(min_size=1, max_size=40).filter(lambda s: " " not in s),
    ts=st.integers(min_value=0, max_value=2**40),
    body=st.binary(max_size=200),
    flip=st.integers(min_value=0, max_value=199),
)
def test_sign_verify_round_trip_and_any_flipped_byte_fails(
    msg_id: str, ts: int, body: bytes, flip: int
) -> None:
    """Every signed message verifies; flipping any body byte breaks it."""
    headers = webhook_headers(msg_id, body, SECRET, timestamp=ts)
    assert verify_webhook(headers, body, SECRET, now=ts) == msg_id
    if body:
        i = flip % len(body)
        bad = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
        with pytest.raises(WebhookVerificationError):
            verify_webhook(headers, bad, SECRET, now=ts)
