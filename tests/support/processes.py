"""Run a service (`python -m stream_worker`, `python -m control_api`) as a real subprocess in a test.

Output goes to files, not pipes: a chatty service can never block on a full pipe, and the test reads the
logs after the process ended. `running(...)` kills the process on the way out whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import REPO_ROOT


@dataclass
class Service:
    process: asyncio.subprocess.Process
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)

    async def wait(self, timeout: float) -> int:
        """The exit code; AssertionError if the process is still running after `timeout` seconds."""
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"the process did not exit within {timeout} s") from None


def worker_env(
    bybit_url: str, database_url: str, rabbitmq_url: str, *, api_key: str, api_secret: str, **extra: str
) -> dict[str, str]:
    """The environment of a worker process on the fake Bybit (`bybit_url` is its ws:// base); `extra` adds or
    overrides variables."""
    return {
        "DATABASE_URL": database_url,
        "RABBITMQ_URL": rabbitmq_url,
        "BYBIT_WS_URL": bybit_url,
        "BYBIT_REST_URL": bybit_url.replace("ws://", "http://"),
        "BYBIT_API_KEY": api_key,
        "BYBIT_API_SECRET": api_secret,
        "BYBIT_RECONNECT_CAP": "0.5",
        "LOG_FORMAT": "json",
        # A fixed metrics port would make two workers (two tests, or a second suite beside this one) collide.
        "WS_GATEWAY_WORKER_METRICS_PORT": "0",
        **extra,
    }


@asynccontextmanager
async def running(module: str, env: Mapping[str, str], log_dir: Path, name: str) -> AsyncIterator[Service]:
    """Start `python -m module` with `env` added to ours, logging into the existing `log_dir`; kill it on exit
    if it is still running."""
    stdout_path, stderr_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=stdout,
            stderr=stderr,
        )
    try:
        yield Service(process, stderr_path)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
