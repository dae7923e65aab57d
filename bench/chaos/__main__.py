"""`uv run python -m bench.chaos --seconds N --seed S [--workers K]`: one chaos run against a database and a
vhost of its own (removed at the end). Progress goes to stderr; the last line on stdout is one JSON object.
Exit status 0 only with zero violations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from pathlib import Path

from loguru import logger

from bench.chaos.run import chaos
from tests.support import services


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long faults are injected")
    parser.add_argument("--seed", type=int, default=None, help="seeds the schedule (random when omitted)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--fault-interval", type=float, default=2.0, help="mean seconds between faults")
    parser.add_argument("--logs", type=Path, default=None, help="keep the processes' logs here")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    logger.remove()  # the in-process fake logs every connection; only trouble matters here
    logger.add(sys.stderr, level="WARNING")
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="chaos-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"chaos: seed {seed}, {args.seconds:g} s of faults, {args.workers} workers, logs in {log_dir}", file=sys.stderr
    )
    vhost, database = services.unique_name("wsg_chaos"), services.unique_name("wsg_chaos")
    rabbitmq_url = services.create_vhost(vhost)
    try:
        database_url = services.create_database(database)
        services.migrate(database_url)
        report = asyncio.run(
            chaos(
                args.seconds,
                seed,
                args.workers,
                database_url,
                rabbitmq_url,
                log_dir,
                fault_interval=args.fault_interval,
            )
        )
    finally:
        services.drop_database(database)
        services.delete_vhost(vhost)
    report["logs"] = str(log_dir)
    print(json.dumps(report, default=str))
    sys.exit(0 if report["violations_total"] == 0 else 1)


if __name__ == "__main__":
    main()
