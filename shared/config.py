"""Typed reading of configuration from an environment mapping, and a secret type that never prints.

Pure: callers pass the mapping (the entry point passes `os.environ`), so tests can build settings freely.
Every error names the variable, so start-up fails with one line an operator can act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit


class ConfigError(ValueError):
    """A variable is missing or malformed; the message names it."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


class Secret:
    """A credential. Its repr and str are '***' so it cannot leak into logs, errors or health output."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def redact_url(url: str) -> str:
    """The URL with any password replaced, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class EnvReader:
    """Reads typed values out of a mapping of environment variables."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def optional_text(self, name: str) -> str | None:
        return self._raw(name)

    def url(self, name: str, default: str, schemes: Iterable[str]) -> str:
        value = self.text(name, default)
        allowed = tuple(schemes)
        parts = urlsplit(value)
        if parts.scheme not in allowed or not parts.hostname:
            raise ConfigError(name, f"expected a URL starting with one of {', '.join(allowed)}://")
        return value

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"expected a whole number, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise ConfigError(name, f"expected {minimum}..{maximum}, got {value}")
        return value

    def number(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"expected a number, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise ConfigError(name, f"expected {minimum}..{maximum}, got {value}")
        return value

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        allowed = tuple(choices)
        value = self.text(name, default).lower()
        if value not in allowed:
            raise ConfigError(name, f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"expected true or false, got {raw!r}")

    def secrets(self, name: str) -> tuple[Secret, ...]:
        """A comma-separated list of secrets (e.g. several API keys); empty entries are ignored."""
        raw = self._raw(name)
        if raw is None:
            return ()
        return tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())

    def secret(self, name: str) -> Secret | None:
        raw = self._raw(name)
        return Secret(raw) if raw is not None else None
