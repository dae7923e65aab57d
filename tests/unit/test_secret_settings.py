"""Scoped keys, secrets from NAME_FILE and TLS parameters: parsed at start-up, every mistake named in one line."""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path

import pytest

from control_api.security import Role, key_id
from control_api.settings import ApiSettings
from shared.config import ConfigError, Secret, postgres_engine_args
from stream_worker.settings import WorkerSettings

KEYS = {
    "key-of-team-a-0123456789": {"role": "write", "services": ["strategy-a", "strategy-b"]},
    "key-of-dashboard-abcdef": {"role": "read", "services": ["strategy-a"]},
    "key-of-platform-admin-42": {"role": "admin"},
}


def scopes(settings: ApiSettings) -> dict[str, tuple[Role, frozenset[str]]]:
    return {key.secret.reveal(): (key.scope.role, key.scope.services) for key in settings.scoped_keys}


def test_scoped_keys_map_each_key_to_its_role_and_services() -> None:
    settings = ApiSettings.from_env({"WS_GATEWAY_API_KEYS": json.dumps(KEYS)})
    assert settings.api_keys == ()
    assert scopes(settings) == {
        "key-of-team-a-0123456789": (Role.WRITE, frozenset({"strategy-a", "strategy-b"})),
        "key-of-dashboard-abcdef": (Role.READ, frozenset({"strategy-a"})),
        "key-of-platform-admin-42": (Role.ADMIN, frozenset()),
    }
    [admin] = [k.scope for k in settings.scoped_keys if k.scope.role is Role.ADMIN]
    assert admin.key_id == key_id("key-of-platform-admin-42")
    assert len(admin.key_id) == 8
    assert int(admin.key_id, 16) >= 0


def test_scoped_keys_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(KEYS) + "\n")
    settings = ApiSettings.from_env({"WS_GATEWAY_API_KEYS_FILE": str(path), "WS_GATEWAY_API_KEY": "old-admin"})
    assert settings.api_keys == (Secret("old-admin"),)
    assert set(scopes(settings)) == set(KEYS)


def test_scope_rules_read_write_and_admin() -> None:
    settings = ApiSettings.from_env({"WS_GATEWAY_API_KEYS": json.dumps(KEYS)})
    by_key = {k.secret.reveal(): k.scope for k in settings.scoped_keys}
    writer, reader, admin = (by_key[k] for k in KEYS)
    assert (writer.may_write("strategy-b"), writer.may_read("strategy-b")) == (True, True)
    assert (writer.may_write("strategy-c"), writer.may_read("strategy-c")) == (False, False)
    assert (reader.may_read("strategy-a"), reader.may_write("strategy-a")) == (True, False)
    assert not reader.may_read("strategy-b")
    assert admin.may_write("anything")
    assert admin.visible_services is None
    assert writer.visible_services == frozenset({"strategy-a", "strategy-b"})


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"k-1234567890": {"role": "owner", "services": ["a"]}}', "role"),
        ('{"k-1234567890": {"role": "write"}}', "at least one service"),
        ('{"k-1234567890": {"role": "read", "services": ["has space"]}}', "regex"),
        ('{"k-1234567890": {"role": "read", "services": ["a"], "extra": 1}}', "unknown field"),
        ('["k-1234567890"]', "object"),
    ],
)
def test_a_malformed_key_file_is_named_and_never_quotes_a_key(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ApiSettings.from_env({"WS_GATEWAY_API_KEYS": value})
    assert raised.value.name == "WS_GATEWAY_API_KEYS"
    assert problem in str(raised.value)
    assert "k-1234567890" not in str(raised.value)
    if problem != "not valid JSON" and problem != "object":
        assert key_id("k-1234567890") in str(raised.value)  # which entry is wrong, by its key id


def test_a_key_listed_as_admin_and_as_scoped_is_refused() -> None:
    keys = json.dumps({"same-key-1234567": {"role": "read", "services": ["a"]}})
    with pytest.raises(ConfigError, match="list it once") as raised:
        ApiSettings.from_env({"WS_GATEWAY_API_KEY": "same-key-1234567", "WS_GATEWAY_API_KEYS": keys})
    assert "same-key-1234567" not in str(raised.value)


def test_neither_admin_nor_scoped_keys_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="WS_GATEWAY_API_KEYS"):
        ApiSettings.from_env({"WS_GATEWAY_API_KEY": " ", "WS_GATEWAY_API_KEYS": ""})


def test_scoped_keys_never_print() -> None:
    settings = ApiSettings.from_env({"WS_GATEWAY_API_KEYS": json.dumps(KEYS)})
    for key in KEYS:
        assert key not in repr(settings)


@pytest.mark.parametrize(
    "name", ["WS_GATEWAY_API_KEY", "WS_GATEWAY_API_KEYS", "DATABASE_URL", "RABBITMQ_URL", "BYBIT_API_SECRET"]
)
def test_a_variable_and_its_file_both_set_is_an_error_naming_the_variable(name: str, tmp_path: Path) -> None:
    path = tmp_path / "value"
    path.write_text("x")
    environ = {"WS_GATEWAY_API_KEY": "k", "BYBIT_API_KEY": "bk", name: "x", f"{name}_FILE": str(path)}
    from_env = WorkerSettings.from_env if name.startswith("BYBIT") else ApiSettings.from_env
    with pytest.raises(ConfigError) as raised:
        from_env(environ)
    assert raised.value.name == name
    assert f"{name}_FILE" in str(raised.value)


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        ApiSettings.from_env({"WS_GATEWAY_API_KEY_FILE": str(tmp_path / "missing")})
    assert raised.value.name == "WS_GATEWAY_API_KEY_FILE"


def test_every_secret_and_url_can_come_from_a_file_without_its_trailing_newline(tmp_path: Path) -> None:
    def secret_file(name: str, value: str) -> str:
        path = tmp_path / name
        path.write_text(value + "\n")
        return str(path)

    database = "postgresql+asyncpg://app:pg-password@db.internal:5432/gateway"
    rabbitmq = "amqp://worker:mq-password@mq.internal:5672/prod"
    environ = {
        "DATABASE_URL_FILE": secret_file("db", database),
        "RABBITMQ_URL_FILE": secret_file("mq", rabbitmq),
        "BYBIT_API_KEY_FILE": secret_file("key", "bybit-key"),
        "BYBIT_API_SECRET_FILE": secret_file("secret", "bybit-secret"),
        "WS_GATEWAY_API_KEY_FILE": secret_file("api", "admin-key-1,admin-key-2"),
    }
    worker = WorkerSettings.from_env(environ)
    assert (worker.database_url, worker.rabbitmq_url) == (database, rabbitmq)
    assert worker.bybit_api_key == Secret("bybit-key")
    assert worker.bybit_api_secret == Secret("bybit-secret")
    api = ApiSettings.from_env(environ)
    assert api.api_keys == (Secret("admin-key-1"), Secret("admin-key-2"))
    assert api.database_url == database


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made by openssl for these tests."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "ca.pem", directory / "ca.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=ws-gateway-test"),
            *("-days", "1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_postgres_verify_full_builds_a_context_that_checks_chain_and_host(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    url = f"postgresql+asyncpg://u:p@db.internal/gw?sslmode=verify-full&sslrootcert={cert}&application_name=wsg"
    settings = ApiSettings.from_env({"WS_GATEWAY_API_KEY": "k", "DATABASE_URL": url})
    stripped, args = postgres_engine_args(settings.database_url)
    assert stripped == "postgresql+asyncpg://u:p@db.internal/gw?application_name=wsg"
    context = args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    with_client_cert = postgres_engine_args(f"{url}&sslcert={cert}&sslkey={key}")[1]["ssl"]
    assert isinstance(with_client_cert, ssl.SSLContext)


def test_postgres_sslmodes_keep_libpq_meanings(certificate: tuple[Path, Path]) -> None:
    base = "postgresql+asyncpg://u@h/db?sslmode="
    assert postgres_engine_args(base + "disable")[1] == {"ssl": False}
    assert postgres_engine_args(base + "prefer")[1] == {"ssl": "prefer"}
    require = postgres_engine_args(base + "require")[1]["ssl"]
    assert isinstance(require, ssl.SSLContext)
    assert require.verify_mode == ssl.CERT_NONE  # encrypted, unverified: libpq's require without a root cert
    verify_ca = postgres_engine_args(f"{base}verify-ca&sslrootcert={certificate[0]}")[1]["ssl"]
    assert isinstance(verify_ca, ssl.SSLContext)
    assert (verify_ca.verify_mode, verify_ca.check_hostname) == (ssl.CERT_REQUIRED, False)
    assert postgres_engine_args("postgresql+asyncpg://u@h/db") == ("postgresql+asyncpg://u@h/db", {})


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("sslmode=strict", "sslmode"),
        ("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", "sslrootcert"),
        ("sslmode=require&sslcert=/nonexistent/c.pem", "sslcert and sslkey"),
    ],
)
def test_bad_postgres_tls_parameters_stop_start_up_naming_database_url(query: str, problem: str) -> None:
    for settings in (ApiSettings, WorkerSettings):
        with pytest.raises(ConfigError) as raised:
            settings.from_env({"WS_GATEWAY_API_KEY": "k", "DATABASE_URL": f"postgresql+asyncpg://u@h/db?{query}"})
        assert raised.value.name == "DATABASE_URL"
        assert problem in str(raised.value)


def test_amqps_with_a_ca_file_is_accepted_and_missing_files_are_named(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    url = f"amqps://worker:pw@mq.internal:5671/prod?cafile={cert}&certfile={cert}&keyfile={key}"
    assert WorkerSettings.from_env({"RABBITMQ_URL": url}).rabbitmq_url == url
    assert ApiSettings.from_env({"WS_GATEWAY_API_KEY": "k", "RABBITMQ_URL": url}).rabbitmq_url == url
    for bad, problem in (
        ("amqps://mq.internal:5671/?cafile=/nonexistent/ca.pem", "cafile"),
        (f"amqp://mq.internal:5672/?cafile={cert}", "amqps://"),
    ):
        with pytest.raises(ConfigError) as raised:
            WorkerSettings.from_env({"RABBITMQ_URL": bad})
        assert raised.value.name == "RABBITMQ_URL"
        assert problem in str(raised.value)
