"""Settings come from the environment and fail with one line naming the bad variable."""

from __future__ import annotations

import pytest

from control_api.settings import ApiSettings
from shared.config import ConfigError, Secret, redact_url


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
