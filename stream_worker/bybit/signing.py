"""Private-stream credentials and the auth signature (PROTOCOL.md §3).

Pure functions of their arguments: no clock (the caller passes `expires_ms`), no I/O, and nothing here ever
puts the secret or a signature into a repr, an error message or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """An API key and its HMAC secret. The repr masks the secret."""

    api_key: str
    api_secret: str

    def __repr__(self) -> str:
        return f"Credentials(api_key={self.api_key!r}, api_secret='***')"

    __str__ = __repr__


def auth_signature(secret: str, expires_ms: int) -> str:
    """Lowercase hex HMAC-SHA256 of `"GET/realtime" + str(expires_ms)` keyed with the UTF-8 secret."""
    message = f"GET/realtime{expires_ms}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
