"""Settings come from the environment and fail with one line naming the bad variable."""

from __future__ import annotations

import pytest

from control_api.settings import ApiSettings
from shared.config import ConfigError, Secret, redact_url
from stream_worker.settings import WorkerSettings


def test_api_refuses_to_start_without_an_api_key() -> None:
    with pytest.raises(ConfigError, match="WS_GATEWAY_API_KEY"):
        ApiSettings.from_env({})


def test_defaults_match_the_documented_ones() -> None:
    settings = ApiSettings.from_env({"WS_GATEWAY_API_KEY": "a, b ,"})
    assert settings.port == 4400
    assert settings.host == "127.0.0.1"
    assert settings.database_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    assert settings.rabbitmq_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.api_keys == (Secret("a"), Secret("b"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WS_GATEWAY_PORT", "http"),
        ("WS_GATEWAY_PORT", "70000"),
        ("DATABASE_URL", "mysql://localhost/db"),
        ("RABBITMQ_URL", "localhost:5672"),
        ("WS_GATEWAY_DB_TIMEOUT", "-1"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_bad_variable_is_named_in_the_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ApiSettings.from_env({"WS_GATEWAY_API_KEY": "k", name: value})
    assert raised.value.name == name
    assert str(raised.value).startswith(f"{name}: ")


def test_secrets_never_print() -> None:
    settings = ApiSettings.from_env({"WS_GATEWAY_API_KEY": "super-secret-key"})
    assert "super-secret-key" not in repr(settings)
    assert "super-secret-key" not in str(settings.api_keys)


def test_redacted_url_hides_the_password() -> None:
    assert redact_url("amqp://user:pw@host:5672/vh") == "amqp://user:***@host:5672/vh"
    assert redact_url("postgresql+asyncpg://postgres@127.0.0.1/db") == "postgresql+asyncpg://postgres@127.0.0.1/db"


@pytest.mark.parametrize(
    ("env", "public", "private"),
    [
        ({}, "wss://stream.bybit.com", "wss://stream.bybit.com"),
        ({"BYBIT_ENVIRONMENT": "demo"}, "wss://stream.bybit.com", "wss://stream-demo.bybit.com"),
        ({"BYBIT_WS_URL": "ws://shared:1/"}, "ws://shared:1", "ws://shared:1"),
        ({"BYBIT_PUBLIC_WS_URL": "wss://stream.bybit.eu"}, "wss://stream.bybit.eu", "wss://stream.bybit.com"),
        (
            {"BYBIT_ENVIRONMENT": "demo", "BYBIT_PRIVATE_WS_URL": "ws://p:2"},
            "wss://stream.bybit.com",
            "ws://p:2",
        ),
        (
            {"BYBIT_WS_URL": "ws://shared:1", "BYBIT_PRIVATE_WS_URL": "ws://p:2"},
            "ws://shared:1",
            "ws://p:2",
        ),
    ],
)
def test_public_and_private_bybit_urls_are_overridden_separately_or_together(
    env: dict[str, str], public: str, private: str
) -> None:
    settings = WorkerSettings.from_env(env)
    assert (settings.public_ws_url, settings.private_ws_url) == (public, private)


def test_a_malformed_public_url_is_named() -> None:
    with pytest.raises(ConfigError, match="BYBIT_PUBLIC_WS_URL"):
        WorkerSettings.from_env({"BYBIT_PUBLIC_WS_URL": "https://stream.bybit.com"})


def test_the_periodic_account_resync_is_read_and_0_switches_it_off() -> None:
    assert WorkerSettings.from_env({}).account_resync_interval == 60
    assert WorkerSettings.from_env({"WS_GATEWAY_ACCOUNT_RESYNC_INTERVAL": "0"}).account_resync_interval == 0
    with pytest.raises(ConfigError) as raised:
        WorkerSettings.from_env({"WS_GATEWAY_ACCOUNT_RESYNC_INTERVAL": "-5"})
    assert raised.value.name == "WS_GATEWAY_ACCOUNT_RESYNC_INTERVAL"
