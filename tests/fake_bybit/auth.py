"""Checks private-stream `auth` requests the way Bybit does (PROTOCOL.md §3).

Pure: the caller passes the current time. `sign` is public so tests and clients can build valid requests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def sign(secret: str, expires: int | str) -> str:
    """Lowercase hex HMAC-SHA256 of `GET/realtime{expires}` keyed with `secret` (§3.1)."""
    message = f"GET/realtime{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, kw_only=True)
class AuthVerdict:
    ok: bool
    api_key: str | None
    reason: str  # why it failed, for test assertions; Bybit itself only ever says "Params Error"


def check_auth(args: Any, accounts: Mapping[str, str], now_ms: int) -> AuthVerdict:
    """Verify `args = [api_key, expires, signature]` against the configured key -> secret map."""
    if not isinstance(args, list) or len(args) != 3:
        return AuthVerdict(ok=False, api_key=None, reason="args must be [api_key, expires, signature]")
    api_key, expires, signature = args
    if not isinstance(api_key, str):
        return AuthVerdict(ok=False, api_key=None, reason="api_key is not a string")
    expires_ms = _as_millis(expires)
    if expires_ms is None:
        return AuthVerdict(ok=False, api_key=api_key, reason="expires is not an integer")
    secret = accounts.get(api_key)
    if secret is None:
        return AuthVerdict(ok=False, api_key=api_key, reason="unknown api_key")
    if not isinstance(signature, str):
        return AuthVerdict(ok=False, api_key=api_key, reason="signature is not a string")
    # The signed text is exactly what the client sent as expires: str(1662350400000) or "1662350400000".
    expected = sign(secret, str(expires))
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return AuthVerdict(ok=False, api_key=api_key, reason="bad signature")
    if expires_ms <= now_ms:
        return AuthVerdict(ok=False, api_key=api_key, reason="expired")
    return AuthVerdict(ok=True, api_key=api_key, reason="")


def _as_millis(expires: Any) -> int | None:
    # bool is an int in Python, but `true` is not a timestamp.
    if isinstance(expires, int) and not isinstance(expires, bool):
        return expires
    if isinstance(expires, str) and expires.isdigit():
        return int(expires)
    return None
