"""Every command answers --help and --version without starting anything, and --check-config validates the
environment and reaches PostgreSQL and RabbitMQ, one line per problem, exit 0 or 1."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.services import REPO_ROOT

MODULES = ("control_api", "stream_worker", "ws_gateway_dev")


def run(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BYBIT_", "WS_GATEWAY_"))}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env={**environ, "WS_GATEWAY_API_KEY": "k", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("module", MODULES)
def test_help_describes_the_command_and_starts_nothing(module: str) -> None:
    # Before, `ws-gateway-worker --help` started a worker against mainnet; now it must print and exit at once.
    result = run(module, "--help", BYBIT_WS_URL="ws://127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert "--check-config" in result.stdout
    assert "starting" not in result.stderr


@pytest.mark.parametrize("module", MODULES)
def test_version_is_the_package_version(module: str) -> None:
    result = run(module, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("0.1.0") or "unknown" in result.stdout


@pytest.mark.parametrize("module", ["control_api", "stream_worker"])
def test_check_config_passes_when_everything_is_reachable(module: str, database_url: str, rabbitmq_url: str) -> None:
    result = run(module, "--check-config", DATABASE_URL=database_url, RABBITMQ_URL=rabbitmq_url)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stderr


@pytest.mark.parametrize("module", ["control_api", "stream_worker"])
def test_check_config_names_an_unreachable_broker_in_one_line_and_exits_1(module: str, database_url: str) -> None:
    result = run(module, "--check-config", DATABASE_URL=database_url, RABBITMQ_URL="amqp://guest:secret@127.0.0.1:9/")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "RABBITMQ_URL" in lines[0]
    assert "secret" not in lines[0]


def test_check_config_names_a_malformed_variable_and_exits_1() -> None:
    result = run("control_api", "--check-config", WS_GATEWAY_PORT="http")
    assert result.returncode == 1
    assert "WS_GATEWAY_PORT" in result.stderr
