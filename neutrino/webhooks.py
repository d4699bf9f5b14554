"""Signing of Neutrino's webhooks (alerts and task callbacks), for senders and receivers alike.

Every webhook carries `Neutrino-Signature: t=<unix seconds>,v1=<hex>`, where the hex is
HMAC-SHA256(secret, "<t>." + raw body). The timestamp is inside the signed text, so a receiver that
refuses old timestamps (`tolerance_s`) also refuses a captured request played again later.

A receiver checks the raw body it read, before parsing it:

    from neutrino.webhooks import verify_signature
    if not verify_signature(secret, body, request.headers["Neutrino-Signature"]):
        return 400
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Neutrino-Signature"
EVENT_HEADER = "Neutrino-Event"
DELIVERY_HEADER = "Neutrino-Delivery"
DEFAULT_TOLERANCE_S = 300.0


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `Neutrino-Signature` value for `body`, signed now (or at `timestamp`)."""
    at = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={at},v1={signature(secret, body, at)}"


def verify_signature(secret: str, body: bytes, header: str, *, tolerance_s: float = DEFAULT_TOLERANCE_S,
                     now: float | None = None) -> bool:
    """Whether `header` signs `body` with `secret`, at a time within `tolerance_s` of `now`.

    Any `v1=` entry may match (a sender rotating secrets may send two); a header that does not parse is False.
    """
    parts = [part.strip().split("=", 1) for part in header.split(",")]
    fields = [(kv[0], kv[1]) for kv in parts if len(kv) == 2]
    stamps = [value for key, value in fields if key == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    at = int(stamps[0])
    if abs((time.time() if now is None else now) - at) > tolerance_s:
        return False
    expected = signature(secret, body, at)
    return any(hmac.compare_digest(expected, value) for key, value in fields if key == "v1")
