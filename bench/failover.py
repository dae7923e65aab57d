"""Failover times over repeated rounds: `uv run python -m bench.failover [--rounds 5] [--out DIR]`.

Each round is the one `tests/e2e/test_failover.py` runs once (`tests.support.failover.run_round`): three
worker processes with the production lease defaults on the fake Bybit, 60 public topics over four categories
plus the private stream; SIGKILL the private holder and another market-data worker; time until the survivor
has subscribed the orphaned topics, until the consumer sees their events, and until the private stream is
back; count lost account events; restart the two and count the rebalance's subscribes. Every round gets a
fresh database and the run a vhost of its own (PostgreSQL and RabbitMQ on localhost, as for the tests).
Prints one table (median and max per figure) and writes `failover.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from dataclasses import asdict, fields
from pathlib import Path

from loguru import logger

from control_api.settings import ApiSettings
from shared.config import Secret
from tests.fake_bybit import FakeBybit
from tests.support import services
from tests.support.apiserver import api_client
from tests.support.failover import Round, run_round
from tests.support.processes import worker_env

BYBIT_KEY, BYBIT_SECRET, API_KEY = "bench-key", "bench-secret", "bench-api-key"
TIMED = (
    "market_resubscribed_s",
    "market_events_s",
    "private_resubscribed_s",
    "account_events_s",
    "rebalance_settled_s",
)
COUNTED = (
    "orphaned_topics",
    "account_events_pushed",
    "account_events_lost",
    "resync_failures",
    "rebalance_moved",
    "rebalance_subscribes",
    "max_subscribes_per_topic",
)


async def one_round(database_url: str, rabbitmq_url: str, log_dir: Path) -> Round:
    settings = ApiSettings(
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        api_keys=(Secret(API_KEY),),
        db_timeout=5.0,
        write_rate=1000.0,  # 62 subscriptions are created at once; the per-key limit is not what is measured
        write_burst=1000,
    )
    async with (
        FakeBybit(accounts={BYBIT_KEY: BYBIT_SECRET}, push_interval=0.2) as fake,
        api_client(settings, API_KEY) as api,
    ):

        def env_for(worker_id: str) -> dict[str, str]:
            # Production settings but for the fake's URLs: the lease, renewal and ping defaults are measured.
            return worker_env(
                fake.url,
                database_url,
                rabbitmq_url,
                api_key=BYBIT_KEY,
                api_secret=BYBIT_SECRET,
                WS_GATEWAY_WORKER_ID=worker_id,
                WS_GATEWAY_WORKER_METRICS_PORT="0",
            )

        return await run_round(api, fake, rabbitmq_url, env_for, log_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    logger.remove()  # the in-process API and fake log every request; only trouble matters here
    logger.add(sys.stderr, level="WARNING")
    vhost = services.unique_name("wsg_failover")
    rabbitmq_url = services.create_vhost(vhost)
    template = services.unique_name("wsg_failover_tpl")
    services.migrate(services.create_database(template))
    rounds: list[Round] = []
    try:
        for number in range(1, args.rounds + 1):
            name = services.unique_name("wsg_failover")
            database_url = services.create_database(name, template=template)
            try:
                logs = args.out / "failover-logs" / f"round-{number}"  # kept: the workers' logs explain outliers
                logs.mkdir(parents=True, exist_ok=True)
                result = asyncio.run(one_round(database_url, rabbitmq_url, logs))
            finally:
                services.drop_database(name)
            rounds.append(result)
            print(f"round {number}: " + ", ".join(f"{f.name}={getattr(result, f.name)}" for f in fields(result)))
    finally:
        services.drop_database(template)
        services.delete_vhost(vhost)
    print(f"\n{'figure':<26}{'median':>10}{'max':>10}   over {len(rounds)} rounds (lease 5 s, renew 1 s)")
    summary: dict[str, dict[str, float]] = {}
    for name in (*TIMED, *COUNTED):
        values = [float(getattr(r, name)) for r in rounds]
        summary[name] = {"median": statistics.median(values), "max": max(values), "min": min(values)}
        print(f"{name:<26}{summary[name]['median']:>10.2f}{summary[name]['max']:>10.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"rounds": [asdict(r) for r in rounds], "summary": summary}
    (args.out / "failover.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
