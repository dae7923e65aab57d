"""Typed reading of configuration from an environment mapping, and a secret type that never prints.

Callers pass the mapping (the entry point passes `os.environ`), so tests can build settings freely. Any
variable may instead be given as `NAME_FILE`, the path of a file holding the value (Docker and Kubernetes
secrets); that file is read when settings are built, never at import. Every error names the variable, so
start-up fails with one line an operator can act on.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


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


def _read_text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


class EnvReader:
    """Reads typed values out of a mapping of environment variables, or out of the files `NAME_FILE` names."""

    def __init__(self, environ: Mapping[str, str], read_text: Callable[[str], str] = _read_text) -> None:
        self._environ = environ
        self._read_text = read_text

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        direct = value.strip() if value is not None and value.strip() else None
        path = self._environ.get(f"{name}_FILE", "").strip()
        if not path:
            return direct
        if direct is not None:
            raise ConfigError(name, f"set {name} or {name}_FILE, not both")
        try:
            content = self._read_text(path).strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
            raise ConfigError(f"{name}_FILE", f"cannot read {path}: {reason}") from None
        if not content:
            raise ConfigError(f"{name}_FILE", f"{path} is empty")
        return content

    def is_set(self, name: str) -> bool:
        """True if `name` or `name_FILE` gives a value."""
        return self._raw(name) is not None

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def optional_text(self, name: str) -> str | None:
        return self._raw(name)

    def url(self, name: str, default: str, schemes: Iterable[str]) -> str:
        value = self.text(name, default)
        allowed = tuple(schemes)
        try:
            parts = urlsplit(value)
            hostname = parts.hostname
            _ = parts.port  # raises ValueError on a port that is not a number
        except ValueError:
            hostname = None
        if parts.scheme not in allowed or not hostname:
            raise ConfigError(name, f"expected a URL starting with one of {', '.join(allowed)}://")
        return value

    def postgres_url(self, name: str, default: str) -> str:
        """A `postgresql+asyncpg://` URL; its libpq TLS parameters (`sslmode`, `sslrootcert`, `sslcert`,
        `sslkey`) are checked here, so a typo or a missing certificate stops start-up, not the first query."""
        value = self.url(name, default, ("postgresql+asyncpg",))
        try:
            postgres_tls(value).check_files()
        except ValueError as error:
            raise ConfigError(name, str(error)) from None
        return value

    def amqp_url(self, name: str, default: str) -> str:
        """An `amqp://` or `amqps://` URL; the certificate files its query names must exist."""
        value = self.url(name, default, ("amqp", "amqps"))
        query = dict(parse_qsl(urlsplit(value).query))
        for parameter in AMQP_TLS_FILES:
            if parameter in query and not Path(query[parameter]).is_file():
                raise ConfigError(name, f"{parameter}: no such file {query[parameter]}")
        if urlsplit(value).scheme == "amqp" and any(p in query for p in AMQP_TLS_FILES):
            raise ConfigError(name, "certificate parameters need amqps://")
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


# aiormq reads these from an amqps:// URL's query (with `no_verify_ssl=1` to skip verification: do not).
AMQP_TLS_FILES = ("cafile", "certfile", "keyfile")
POSTGRES_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_POSTGRES_TLS_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


class PostgresTls:
    """The libpq TLS parameters of a DATABASE_URL, which asyncpg does not take as keyword arguments.

    Pure until `ssl_argument()`, which reads the certificate files when an engine is created.
    """

    __slots__ = ("cert", "key", "mode", "rootcert")

    def __init__(self, mode: str, rootcert: str | None, cert: str | None, key: str | None) -> None:
        if mode not in POSTGRES_SSL_MODES:
            raise ValueError(f"sslmode: expected one of {', '.join(POSTGRES_SSL_MODES)}, got {mode!r}")
        if (cert is None) != (key is None):
            raise ValueError("sslcert and sslkey must be given together")
        self.mode, self.rootcert, self.cert, self.key = mode, rootcert, cert, key

    def check_files(self) -> None:
        for parameter, path in (("sslrootcert", self.rootcert), ("sslcert", self.cert), ("sslkey", self.key)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{parameter}: no such file {path}")

    def ssl_argument(self) -> ssl.SSLContext | str | bool:
        """asyncpg's `ssl` argument, with libpq's meaning of each mode.

        `require` checks the chain only when a root certificate is given (as libpq does); `verify-ca` checks the
        chain against `sslrootcert` (or the system store); `verify-full` also checks the host name.
        """
        if self.mode == "disable":
            return False
        if self.mode in ("allow", "prefer"):
            return self.mode  # asyncpg falls back to (or from) plain text itself
        if self.mode == "require" and self.rootcert is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=self.rootcert)
            context.check_hostname = self.mode == "verify-full"
        if self.cert is not None and self.key is not None:
            context.load_cert_chain(self.cert, self.key)
        return context


def postgres_tls(url: str) -> PostgresTls:
    """The TLS parameters of a PostgreSQL URL (`prefer`, libpq's default, when it names none)."""
    query = dict(parse_qsl(urlsplit(url).query))
    return PostgresTls(
        query.get("sslmode", "prefer"), query.get("sslrootcert"), query.get("sslcert"), query.get("sslkey")
    )


def postgres_engine_args(url: str) -> tuple[str, dict[str, Any]]:
    """The URL without libpq's TLS parameters, and the connect arguments that carry them to asyncpg."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    if not any(name in _POSTGRES_TLS_PARAMETERS for name, _ in query):
        return url, {}
    tls = postgres_tls(url)
    kept = urlencode([(name, value) for name, value in query if name not in _POSTGRES_TLS_PARAMETERS])
    return urlunsplit(parts._replace(query=kept)), {"ssl": tls.ssl_argument()}
