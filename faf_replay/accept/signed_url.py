"""Signed WebSocket URLs, as FAF's edge proxy checks them.

FAF's services hand out URLs like ``/<game_id>/<name>.scfareplay?verify=<t>-<mac>``
and the proxy lets only those through (Cloudflare's ``is_timed_hmac_valid_v0``):
``<mac>`` is the base64 HMAC-SHA256, keyed with the shared secret, of the path
followed by the decimal timestamp ``<t>`` (Unix seconds), and the URL is valid
for ``lifetime`` seconds after ``<t>``. With the secret configured the server
checks the same token itself. Pure logic, no Twisted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

#: Tokens stamped this far in the future still pass (clocks differ a little).
CLOCK_SKEW = 60.0


class SignedUrlError(ValueError):
    pass


def sign(secret: bytes, path: str, timestamp: int) -> str:
    """The ``verify`` value for ``path`` at ``timestamp``."""
    mac = hmac.new(secret, f"{path}{timestamp}".encode(), hashlib.sha256).digest()
    return f"{timestamp}-{base64.b64encode(mac).decode()}"


def check_signed_url(
    secret: bytes, path: str, params: Mapping[str, Sequence[str]], now: float, lifetime: float
) -> None:
    """Raise :class:`SignedUrlError` unless ``params["verify"]`` signs ``path`` and is fresh."""
    values = params.get("verify") or []
    if len(values) != 1:
        raise SignedUrlError("no verify parameter")
    stamp, _, mac = values[0].partition("-")
    if not stamp.isdigit() or not mac:
        raise SignedUrlError("malformed verify parameter")
    try:
        given = base64.b64decode(mac.replace(" ", "+"), validate=True)
    except (binascii.Error, ValueError):
        raise SignedUrlError("malformed verify parameter") from None
    expected = hmac.new(secret, f"{path}{stamp}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise SignedUrlError("the signature does not match")
    issued = int(stamp)
    if now >= issued + lifetime:
        raise SignedUrlError(f"the URL expired {now - issued - lifetime:.0f} s ago")
    if issued > now + CLOCK_SKEW:
        raise SignedUrlError("the URL is stamped in the future")
