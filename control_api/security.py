"""API keys and what each may do: the `X-API-Key` guard and the scope a key grants.

A key is `admin` (everything), `write` (create, read and cancel the subscriptions of its services) or `read`
(list and read them). Keys are compared in constant time and never logged or stored: a key is named by its
key id, the first 8 hex digits of its SHA-256, in log lines and audit rows. No I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from control_api.errors import Forbidden, Unauthorized
from shared.api import ServiceName
from shared.config import ConfigError, Secret

API_KEY_HEADER = "X-API-Key"
SCOPE_STATE = "access"  # where the guard leaves the caller's Scope in the request's scope["state"]
KEY_ID_STATE = "key_id"


class Role(StrEnum):
    ADMIN = "admin"
    WRITE = "write"
    READ = "read"


def key_id(key: str) -> str:
    """The name of a key in logs and records: 8 hex digits of its SHA-256, which cannot be turned back into it."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class Scope(msgspec.Struct, frozen=True, kw_only=True):
    """What one key may do. Every route asks it before touching a subscription; nothing else decides."""

    key_id: str
    role: Role
    services: frozenset[str] = frozenset()  # ignored for admin

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def visible_services(self) -> frozenset[str] | None:
        """The services whose rows this key may see; None means all of them."""
        return None if self.is_admin else self.services

    def may_read(self, service: str) -> bool:
        return self.is_admin or service in self.services

    def may_write(self, service: str) -> bool:
        return self.is_admin or (self.role is Role.WRITE and service in self.services)

    def require_read(self, service: str) -> None:
        if not self.may_read(service):
            raise Forbidden(
                f"this API key may not read subscriptions of service {service!r}",
                {"service": service, "key_id": self.key_id},
            )

    def require_write(self, service: str) -> None:
        if self.may_write(service):
            return
        if self.role is Role.READ:
            message = f"this API key is read-only; it may not change subscriptions of service {service!r}"
        else:
            message = f"this API key may not change subscriptions of service {service!r}"
        raise Forbidden(message, {"service": service, "key_id": self.key_id, "role": self.role.value})

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("this route needs an admin API key", {"key_id": self.key_id, "role": self.role.value})


class ApiKey:
    """A key and its scope. Holds the key as a Secret, so printing one shows '***'."""

    __slots__ = ("scope", "secret")

    def __init__(self, secret: Secret, scope: Scope) -> None:
        self.secret = secret
        self.scope = scope

    @classmethod
    def admin(cls, secret: Secret) -> ApiKey:
        return cls(secret, Scope(key_id=key_id(secret.reveal()), role=Role.ADMIN))

    def __repr__(self) -> str:
        return f"ApiKey(key_id={self.scope.key_id!r}, role={self.scope.role.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and (other.secret, other.scope) == (self.secret, self.scope)

    def __hash__(self) -> int:
        return hash((self.secret, self.scope))


class KeyGrant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One entry of WS_GATEWAY_API_KEYS: `{"role": "write", "services": ["strategy-a"]}`."""

    role: Role
    services: list[ServiceName] = msgspec.field(default_factory=list)


def parse_scoped_keys(name: str, raw: str) -> tuple[ApiKey, ...]:
    """The keys of a JSON object `{key: {"role", "services"}}`; raises ConfigError naming `name` and the key's
    id, never the key."""
    try:
        entries = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ConfigError(name, "not valid JSON") from None
    if not isinstance(entries, dict):
        raise ConfigError(name, "expected a JSON object {key: {role, services}}")
    keys: list[ApiKey] = []
    for key, entry in entries.items():
        ident = key_id(key)
        if not key or key != key.strip() or "," in key:
            raise ConfigError(name, f"key {ident}: empty, or with spaces around it or a comma in it")
        try:
            grant = msgspec.convert(entry, KeyGrant)
        except msgspec.ValidationError as error:
            raise ConfigError(name, f"key {ident}: {error}") from None
        if grant.role is not Role.ADMIN and not grant.services:
            raise ConfigError(name, f"key {ident}: a {grant.role.value} key needs at least one service")
        services = frozenset() if grant.role is Role.ADMIN else frozenset(grant.services)
        keys.append(ApiKey(Secret(key), Scope(key_id=ident, role=grant.role, services=services)))
    return tuple(keys)


def merge_keys(admin: Iterable[Secret], scoped: Iterable[ApiKey], name: str) -> tuple[ApiKey, ...]:
    """Admin keys from WS_GATEWAY_API_KEY and scoped ones; a key listed twice, or two keys whose ids collide,
    is a ConfigError (the key id must name exactly one key in the audit trail)."""
    keys = [*(ApiKey.admin(secret) for secret in dict.fromkeys(admin)), *scoped]
    by_id: dict[str, ApiKey] = {}
    for key in keys:
        seen = by_id.get(key.scope.key_id)
        if seen is None:
            by_id[key.scope.key_id] = key
        elif seen.secret == key.secret:
            raise ConfigError(name, f"key {key.scope.key_id} is also in WS_GATEWAY_API_KEY: list it once")
        else:
            raise ConfigError(name, f"two keys share the key id {key.scope.key_id}: replace one of them")
    return tuple(by_id.values())


class Keyring:
    """Every configured key. Looks a presented key up in constant time over all of them."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = [(key.secret.reveal().encode(), key.scope) for key in keys]

    def scope_of(self, presented: str) -> Scope | None:
        """The scope of `presented`, or None; compares with every key so timing says nothing about which."""
        candidate = presented.encode()
        found: Scope | None = None
        for secret, scope in self._keys:
            if hmac.compare_digest(candidate, secret):
                found = scope
        return found


def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Scope | None:
    """The caller's scope; None without a key; Unauthorized for a key that is not ours."""
    presented = connection.headers.get(API_KEY_HEADER)
    if not presented:
        return None
    keyring: Keyring = connection.app.state.keyring
    scope = keyring.scope_of(presented)
    if scope is None:
        raise Unauthorized(f"invalid {API_KEY_HEADER}")
    state = connection.scope.setdefault("state", {})
    state[SCOPE_STATE] = scope
    state[KEY_ID_STATE] = scope.key_id  # the access log line names the key by it
    return scope


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if authenticate(connection) is None:
        raise Unauthorized(f"missing {API_KEY_HEADER} header")


def scope_of_request(connection: ASGIConnection[Any, Any, Any, Any]) -> Scope:
    """The scope the guard found (routes under /api/v1 only)."""
    scope = connection.scope.get("state", {}).get(SCOPE_STATE)
    if not isinstance(scope, Scope):
        raise Unauthorized(f"missing {API_KEY_HEADER} header")
    return scope
