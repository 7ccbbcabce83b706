"""Both-way interop with the reference ``standardwebhooks`` package, on its own test vectors."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import standardwebhooks  # the dev extra: a missing package fails, never skips

from fokha_integration.http import (
    WebhookVerificationError,
    generate_webhook_secret,
    sign_webhook,
    verify_webhook,
    webhook_headers,
)

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "standardwebhooks" / "vectors.json").read_text()
)


def _headers(signature: str, ts: int | None = None) -> dict[str, str]:
    return {
        "webhook-id": VECTORS["msg_id"],
        "webhook-timestamp": str(VECTORS["timestamp"] if ts is None else ts),
        "webhook-signature": signature,
    }


@pytest.mark.parametrize("secret", [VECTORS["secret"], VECTORS["bare_secret"]])
def test_we_produce_the_reference_signature(secret: str) -> None:
    """sign_webhook gives the vector's signature, with or without the whsec_ prefix."""
    got = sign_webhook(VECTORS["msg_id"], VECTORS["timestamp"], VECTORS["payload"].encode(), secret)
    assert got == VECTORS["signature"]


def test_we_verify_the_reference_vector_among_noise() -> None:
    """The vector verifies, also among the reference tests' bogus v1/v2 entries."""
    sig = " ".join([*VECTORS["noise_signatures"], VECTORS["signature"]])
    got = verify_webhook(
        _headers(sig), VECTORS["payload"].encode(), VECTORS["secret"], now=VECTORS["timestamp"]
    )
    assert got == VECTORS["msg_id"]


def test_we_refuse_the_reference_wrong_signature() -> None:
    """The vector's one-character-off signature is refused."""
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook(
            _headers(VECTORS["wrong_signature"]),
            VECTORS["payload"].encode(),
            VECTORS["secret"],
            now=VECTORS["timestamp"],
        )
    assert info.value.code == "bad_signature"


def test_the_reference_signs_what_we_verify() -> None:
    """A message signed by standardwebhooks.Webhook.sign verifies here."""
    ts = int(time.time())
    ref = standardwebhooks.Webhook(VECTORS["secret"])
    signature = ref.sign(
        msg_id="msg_1", timestamp=datetime.fromtimestamp(ts, tz=timezone.utc), data="{}"
    )
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": signature}
    assert verify_webhook(headers, b"{}", VECTORS["secret"]) == "msg_1"


def test_the_reference_verifies_what_we_sign() -> None:
    """Headers from webhook_headers pass standardwebhooks.Webhook.verify (fresh secret)."""
    secret = generate_webhook_secret()
    body = b'{"symbol":"EURUSD","volume":0.1}'
    headers = webhook_headers("msg_2", body, secret)
    assert standardwebhooks.Webhook(secret).verify(body, headers) == json.loads(body)


def test_the_reference_refuses_what_we_refuse() -> None:
    """A tampered body fails in both libraries."""
    secret = generate_webhook_secret()
    headers = webhook_headers("msg_3", b"{}", secret)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(b'{"a":1}', headers)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, b'{"a":1}', secret)
