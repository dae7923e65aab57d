"""The `X-API-Key` guard: every key is compared in constant time, and keys never reach a log line."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from control_api.errors import Unauthorized
from shared.config import Secret

API_KEY_HEADER = "X-API-Key"


def key_matches(presented: str, keys: tuple[Secret, ...]) -> bool:
    """True if `presented` equals one of `keys`; checks all of them so timing says nothing about which."""
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.reveal().encode())
    return matched


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    presented = connection.headers.get(API_KEY_HEADER)
    if presented is None:
        raise Unauthorized(f"missing {API_KEY_HEADER} header")
    if not key_matches(presented, connection.app.state.api_keys):
        raise Unauthorized(f"invalid {API_KEY_HEADER}")
