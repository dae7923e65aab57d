"""`--check-config`: validate the environment and reach the dependencies, without starting anything.

The one module of `shared` that does I/O, and only when an entry point's `--check-config` calls it: the services
never import it at run time. Each check returns a problem line or None; the caller prints one line per problem
and exits 0 or 1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import sys
from collections.abc import Callable, Sequence

from shared.config import redact_url


def version() -> str:
    try:
        return importlib.metadata.version("ws-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def arguments(program: str, description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options every entry point takes: --help, --version, --check-config."""
    parser = argparse.ArgumentParser(prog=program, description=description)
    parser.add_argument("--version", action="version", version=f"{program} {version()}")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the environment and reach PostgreSQL and RabbitMQ, print one line per problem, "
        "exit 0 if there is none and 1 otherwise; starts nothing",
    )
    return parser.parse_args(argv)


async def postgres_problem(url: str, timeout: float = 5.0) -> str | None:
    import asyncpg  # type: ignore[import-untyped]

    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    try:
        connection = await asyncio.wait_for(asyncpg.connect(dsn), timeout)
    except Exception as error:  # noqa: BLE001 - any failure is the answer, reported as one line
        return f"DATABASE_URL: cannot reach PostgreSQL at {redact_url(url)}: {type(error).__name__}: {error}"
    await connection.close()
    return None


async def rabbitmq_problem(url: str, timeout: float = 5.0) -> str | None:
    import aio_pika

    logging.disable(logging.CRITICAL)  # aiormq's own line about a failed connect would repeat ours
    try:
        connection = await aio_pika.connect(url, timeout=timeout)
    except Exception as error:  # noqa: BLE001 - any failure is the answer, reported as one line
        return f"RABBITMQ_URL: cannot reach RabbitMQ at {redact_url(url)}: {type(error).__name__}: {error}"
    await connection.close()
    return None


async def dependency_problems(database_url: str, rabbitmq_url: str) -> list[str | None]:
    return list(await asyncio.gather(postgres_problem(database_url), rabbitmq_problem(rabbitmq_url)))


def check(program: str, database_url: str, rabbitmq_url: str) -> int:
    """`--check-config`'s whole run once settings have been read: reach both dependencies, report, exit code."""
    return report(program, asyncio.run(dependency_problems(database_url, rabbitmq_url)))


def report(program: str, problems: Sequence[str | None], write: Callable[[str], object] | None = None) -> int:
    """Print one line per problem (or one line saying all is well); the exit code."""
    out = write or (lambda line: print(line, file=sys.stderr))
    found = [problem for problem in problems if problem]
    for problem in found:
        out(f"{program}: {problem}")
    if not found:
        out(f"{program}: configuration OK; PostgreSQL and RabbitMQ reachable")
    return 1 if found else 0
