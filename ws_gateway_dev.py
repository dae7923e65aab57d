"""`ws-gateway-dev`: bring the gateway up on one machine for development.

Runs `alembic upgrade head`, then starts the API and the worker as child processes, forwards SIGINT and
SIGTERM to them, and exits when they have stopped. It imports neither service package: each runs in its own
process, as in production.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

SERVICES = (("api", "control_api"), ("worker", "stream_worker"))
GRACE_SECONDS = 15.0


def alembic_ini() -> Path:
    configured = os.environ.get("WS_GATEWAY_ALEMBIC_INI")
    return Path(configured) if configured else Path(__file__).resolve().parent / "alembic.ini"


def migrate() -> int:
    ini = alembic_ini()
    print(f"ws-gateway-dev: alembic upgrade head ({ini})", file=sys.stderr, flush=True)
    return subprocess.call([sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"], cwd=ini.parent)


def stop_all(children: dict[str, subprocess.Popen[bytes]], signum: int) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signum)


def check_config() -> int:
    """Each service checks its own environment and dependencies; the launcher adds its alembic.ini."""
    codes = [subprocess.call([sys.executable, "-m", module, "--check-config"]) for _, module in SERVICES]
    if not alembic_ini().is_file():
        print(f"ws-gateway-dev: WS_GATEWAY_ALEMBIC_INI: no such file: {alembic_ini()}", file=sys.stderr)
        codes.append(1)
    return 1 if any(codes) else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ws-gateway-dev",
        description="Run the gateway on one machine: alembic upgrade head, then the API and the worker as child "
        "processes (Ctrl-C or SIGTERM stops both). Configured by environment variables (see env.example).",
    )
    parser.add_argument("--version", action="version", version=f"ws-gateway-dev {_version()}")
    parser.add_argument(
        "--check-config", action="store_true", help="check both services' configuration and dependencies; start nothing"
    )
    if parser.parse_args(argv).check_config:
        raise SystemExit(check_config())
    code = migrate()
    if code != 0:
        print("ws-gateway-dev: migrations failed; not starting the services", file=sys.stderr)
        raise SystemExit(code)
    children = {name: subprocess.Popen([sys.executable, "-m", module]) for name, module in SERVICES}
    stop_requested_at: float | None = None
    exit_code = 0

    def forward(signum: int, _: FrameType | None) -> None:
        nonlocal stop_requested_at
        stop_requested_at = stop_requested_at or time.monotonic()
        stop_all(children, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    while any(child.poll() is None for child in children.values()):
        if stop_requested_at is None:
            for name, child in children.items():
                if child.returncode is not None:
                    # One service died on its own: stop the other rather than run half a gateway.
                    print(f"ws-gateway-dev: {name} exited with {child.returncode}; stopping", file=sys.stderr)
                    exit_code = child.returncode or 1
                    stop_requested_at = time.monotonic()
                    stop_all(children, signal.SIGTERM)
                    break
        elif time.monotonic() - stop_requested_at > GRACE_SECONDS:
            for child in children.values():
                if child.poll() is None:
                    child.kill()
        time.sleep(0.1)
    if exit_code == 0:
        # Any child that did not exit 0 (a signal shows as a negative code) makes the launcher fail too.
        exit_code = next((child.returncode for child in children.values() if child.returncode), 0)
    raise SystemExit(128 - exit_code if exit_code < 0 else exit_code)


def _version() -> str:
    try:
        return importlib.metadata.version("ws-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


if __name__ == "__main__":
    main()
