"""More topics in one category than one Bybit socket may carry: all live, on several sockets, none `failed`.

Bybit caps one public connection at 21,000 characters of subscribed args and an option connection at 2,000
topics (PROTOCOL.md §5.2). The fake enforces both; these tests lower the caps so a handful of topics fill a socket.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.exposition import generate_latest

from shared.enums import ChannelType, Endpoint
from shared.routing import service_queue
from tests.e2e.conftest import consuming, delete_queues
from tests.e2e.test_late_joiner import subscribe
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until

URL = "/api/v1/subscriptions"


def symbols(count: int) -> list[str]:
    return [f"SYM{i:02d}USDT" for i in range(count)]


def open_sockets(fake: FakeBybit, category: str) -> list[set[str]]:
    return [set(r.topics) for r in fake.connections if r.category == category and r.is_open]


async def statuses(api: httpx.AsyncClient, rows: list[dict[str, Any]]) -> list[str]:
    return [(await api.get(f"{URL}/{row['id']}")).json()["status"] for row in rows]


async def all_active(api: httpx.AsyncClient, rows: list[dict[str, Any]]) -> bool:
    return set(await statuses(api, rows)) == {"active"}


async def test_a_category_beyond_one_sockets_budget_is_spread_over_sockets_and_every_topic_delivers(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any], rabbitmq_url: str
) -> None:
    svc, late = (f"svc-{uuid.uuid4().hex[:8]}" for _ in range(2))
    wanted = symbols(14)
    topics = {f"tickers.{symbol}" for symbol in wanted}  # 16 characters each
    fake.max_args_chars = 100  # six topics fit one socket on the fake
    # The worker's budget counts 19 characters a topic ("tickers.SYM00USDT",): five per socket, three sockets.
    async with start_worker(socket_args_chars=100) as worker:
        rows = [await subscribe(api, svc, channel_type="ticker", symbol=symbol) for symbol in wanted]
        await wait_until(
            lambda: worker.connections[Endpoint.LINEAR].protocol.subscribed == topics, timeout=20, what="all acked"
        )
        sockets = open_sockets(fake, "linear")
        assert len(sockets) == 3
        assert set().union(*sockets) == topics
        assert sum(map(len, sockets)) == len(topics)  # each topic on one socket only
        assert all(sum(len(t) for t in carried) <= 100 for carried in sockets)
        assert fake.subscribe_rejections == 0  # planned below the cap, not learned from refusals
        await wait_until(lambda: all_active(api, rows), what="every row active")

        # A second service joining every topic late gets each one too, whichever socket carries it.
        await subscribe(api, late, channel_type="ticker", symbol=wanted[0])
        queues = [service_queue(s, ChannelType.TICKER) for s in (svc, late)]
        async with consuming(rabbitmq_url, queues[0]) as tickers:
            await wait_until(
                lambda: {e.topic.rsplit(".", 1)[-1] for e in tickers.envelopes} >= set(wanted),
                timeout=20,
                what="a ticker from every topic",
            )

        # Most subscribers leave: the topics left fit one socket, so the others close.
        for row in rows[2:]:
            assert (await api.delete(f"{URL}/{row['id']}")).status_code in (200, 202, 204)
        remaining = {f"tickers.{symbol}" for symbol in wanted[:2]}
        await wait_until(
            lambda: open_sockets(fake, "linear") == [remaining], timeout=20, what="consolidated onto one socket"
        )
        assert worker.connections[Endpoint.LINEAR].protocol.subscribed == remaining
        assert await all_active(api, rows[:2])
    await delete_queues(rabbitmq_url, *queues)


async def test_a_capacity_refusal_moves_the_topic_to_a_new_socket_instead_of_failing_it(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any]
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    wanted = symbols(10)
    topics = {f"tickers.{symbol}" for symbol in wanted}
    fake.max_args_chars = 70  # four topics a socket, while the worker plans for Bybit's documented 21,000
    async with start_worker() as worker:
        rows = [await subscribe(api, svc, channel_type="ticker", symbol=symbol) for symbol in wanted]
        linear = worker.connections[Endpoint.LINEAR]
        await wait_until(lambda: linear.protocol.subscribed == topics, timeout=30, what="all acked somewhere")
        assert linear.protocol.failed == {}
        assert len(open_sockets(fake, "linear")) == 3
        assert fake.subscribe_rejections >= 2
        await wait_until(lambda: all_active(api, rows), what="every row active")
        assert "failed" not in await statuses(api, rows)
        metrics = generate_latest(worker.metrics).decode()
    assert 'ws_gateway_worker_bybit_sockets_open{socket="linear"} 3.0' in metrics
    assert 'ws_gateway_worker_bybit_topics_moved_total{socket="linear"}' in metrics


async def test_option_sockets_carry_at_most_their_topic_budget(
    api: httpx.AsyncClient, fake: FakeBybit, start_worker: Callable[..., Any]
) -> None:
    svc = f"svc-{uuid.uuid4().hex[:8]}"
    wanted = [f"BTC-6JAN27-{strike}-C" for strike in range(90_000, 97_000, 1_000)]
    topics = {f"tickers.{symbol}" for symbol in wanted}
    fake.max_option_topics = 3
    async with start_worker(option_socket_topics=3) as worker:
        for symbol in wanted:
            await subscribe(api, svc, channel_type="ticker", category="option", symbol=symbol)
        option = worker.connections[Endpoint.OPTION]
        await wait_until(lambda: option.protocol.subscribed == topics, timeout=20, what="all acked")
        assert sorted(len(carried) for carried in open_sockets(fake, "option")) == [1, 3, 3]
        assert fake.subscribe_rejections == 0
