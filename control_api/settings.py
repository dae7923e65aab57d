"""The API's settings, read once from the environment by the entry point."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from shared.config import ConfigError, EnvReader, Secret

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = DEFAULT_DATABASE_URL
    rabbitmq_url: str = DEFAULT_RABBITMQ_URL
    host: str = "127.0.0.1"
    port: int = 4400
    api_keys: tuple[Secret, ...] = ()
    # How long a request may wait on PostgreSQL before it is answered 503 (connect and each statement).
    db_timeout: float = 5.0
    # How long the outbox relay waits between attempts while RabbitMQ is unreachable (doubling up to this).
    relay_retry_max: float = 5.0
    max_body_bytes: int = 64 * 1024
    # A worker heartbeat older than this makes /health answer 503 (the worker writes one every 5 s).
    worker_stale_after: float = 20.0
    # Per API key, per replica: sustained writes per second and the burst allowed above it.
    write_rate: float = 20.0
    write_burst: int = 40
    uvloop: bool = True  # the faster event loop; switch off to debug with the standard one
    log_level: str = "info"
    log_format: str = "auto"  # auto | json | pretty

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ApiSettings:
        """Build settings from environment variables; raises ConfigError naming the bad variable."""
        env = EnvReader(environ)
        d = cls()  # every default is stated once, on the fields above
        api_keys = env.secrets("WS_GATEWAY_API_KEY")
        if not api_keys:
            raise ConfigError("WS_GATEWAY_API_KEY", "required: one API key or a comma-separated list")
        return cls(
            database_url=env.url("DATABASE_URL", d.database_url, ("postgresql+asyncpg",)),
            rabbitmq_url=env.url("RABBITMQ_URL", d.rabbitmq_url, ("amqp", "amqps")),
            host=env.text("WS_GATEWAY_HOST", d.host),
            port=env.integer("WS_GATEWAY_PORT", d.port, minimum=1, maximum=65535),
            api_keys=api_keys,
            db_timeout=env.number("WS_GATEWAY_DB_TIMEOUT", d.db_timeout, minimum=0.1, maximum=120),
            relay_retry_max=env.number("WS_GATEWAY_RELAY_RETRY_MAX", d.relay_retry_max, minimum=0.1, maximum=300),
            max_body_bytes=env.integer("WS_GATEWAY_MAX_BODY_BYTES", d.max_body_bytes, minimum=1024, maximum=10_000_000),
            write_rate=env.number("WS_GATEWAY_WRITE_RATE", d.write_rate, minimum=0.01, maximum=100_000),
            write_burst=env.integer("WS_GATEWAY_WRITE_BURST", d.write_burst, minimum=1, maximum=1_000_000),
            worker_stale_after=env.number(
                "WS_GATEWAY_WORKER_STALE_AFTER", d.worker_stale_after, minimum=1, maximum=3600
            ),
            uvloop=env.flag("WS_GATEWAY_UVLOOP", d.uvloop),
            log_level=env.choice("LOG_LEVEL", d.log_level, ("debug", "info", "warning", "error")),
            log_format=env.choice("LOG_FORMAT", d.log_format, ("auto", "json", "pretty")),
        )
