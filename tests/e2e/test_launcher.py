"""`ws-gateway-dev` migrates, serves the API and the worker, and stops both cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_health(url: str, launcher: subprocess.Popen[bytes], timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert launcher.poll() is None, "the launcher exited early"
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the API never answered /health")


def test_launcher_migrates_serves_and_stops_on_sigterm(database_url: str, rabbitmq_url: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "RABBITMQ_URL": rabbitmq_url,
        "WS_GATEWAY_API_KEY": "launcher-key",
        "WS_GATEWAY_PORT": str(port),
        "LOG_FORMAT": "json",
        "WS_GATEWAY_WORKER_METRICS_PORT": "0",  # another suite or worker may hold the default port
    }
    launcher = subprocess.Popen(
        [sys.executable, "-m", "ws_gateway_dev"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        health = wait_for_health(f"http://127.0.0.1:{port}/health", launcher)
        assert health.json()["database"]["status"] == "up"
        # The worker's first heartbeat: its loop runs and handles SIGTERM. Signalled earlier, while it is
        # still importing, it would die by the signal (exit 143) before it had anything to drain.
        deadline = time.monotonic() + 60
        while health.json()["worker"].get("worker_id") is None:
            assert time.monotonic() < deadline, "the worker never reported a heartbeat"
            time.sleep(0.2)
            health = wait_for_health(f"http://127.0.0.1:{port}/health", launcher)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    _, stderr = launcher.communicate()
    assert b"launcher-key" not in stderr


def test_launcher_refuses_to_start_services_when_migrations_fail() -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/none"}
    result = subprocess.run(
        [sys.executable, "-m", "ws_gateway_dev"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert b"not starting the services" in result.stderr


def test_api_fails_at_start_up_with_one_line_naming_the_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k != "WS_GATEWAY_API_KEY"} | {"WS_GATEWAY_PORT": "nope"}
    result = subprocess.run(
        [sys.executable, "-m", "control_api"], cwd=REPO, env=env, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "WS_GATEWAY_PORT" in lines[0] or "WS_GATEWAY_API_KEY" in lines[0]
