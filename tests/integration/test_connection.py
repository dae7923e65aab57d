"""One supervised Bybit socket against the fake: subscribe, receive, survive drops and stalls, back off."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from loguru import logger

from shared.enums import Endpoint
from stream_worker.bybit.events import AuthRejected, Event, Push, Subscribed, SubscribeRejected
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.bybit.signing import Credentials
from stream_worker.exchange.connection import Connection, ConnectionSettings
from tests.fake_bybit import FakeBybit
from tests.support.waiting import wait_until

FAST = ConnectionSettings(open_timeout=5, backoff_first=0.05, backoff_cap=0.2, auth_backoff_first=0.5)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, endpoint: Endpoint, event: Event) -> None:
        self.events.append(event)

    def pushes(self, topic: str) -> list[Push]:
        return [e for e in self.events if isinstance(e, Push) and e.topic == topic]

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(accounts={"key": "secret"}, push_interval=0.02) as server:
        yield server


async def run_connection(connection: Connection) -> asyncio.Task[None]:
    return asyncio.create_task(connection.run(), name="connection-under-test")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_public_socket_subscribes_and_receives_pushes(fake: FakeBybit) -> None:
    recorder = Recorder()
    protocol = BybitProtocol(endpoint=Endpoint.LINEAR, ping_interval=0.5, dead_after=2)
    connection = Connection(protocol, f"{fake.url}/v5/public/linear", recorder, settings=FAST)
    task = await run_connection(connection)
    try:
        assert fake.open_connections == []  # nothing wanted yet: no socket
        connection.want("publicTrade.BTCUSDT")
        await wait_until(lambda: len(recorder.pushes("publicTrade.BTCUSDT")) >= 3, what="trade pushes")
        assert any(isinstance(e, Subscribed) for e in recorder.events)
        assert fake.subscribe_requests("publicTrade.BTCUSDT") == 1
    finally:
        await stop(task)


async def test_dropped_socket_reconnects_and_resubscribes_each_topic_once(fake: FakeBybit) -> None:
    recorder = Recorder()
    protocol = BybitProtocol(endpoint=Endpoint.SPOT, ping_interval=0.5, dead_after=2)
    connection = Connection(protocol, f"{fake.url}/v5/public/spot", recorder, settings=FAST)
    task = await run_connection(connection)
    try:
        for topic in ("publicTrade.BTCUSDT", "orderbook.50.BTCUSDT"):
            connection.want(topic)
        await wait_until(lambda: len(recorder.of(Subscribed)) == 2, what="two acks")
        await fake.drop_connections(close_frame=False)
        await wait_until(lambda: len(recorder.of(Subscribed)) == 4, what="resubscribed after the drop")
        assert fake.subscribe_requests("publicTrade.BTCUSDT") == 2
        assert fake.subscribe_requests("orderbook.50.BTCUSDT") == 2
        assert connection.reconnects == 1
        pushes_before = len(recorder.pushes("publicTrade.BTCUSDT"))
        await wait_until(lambda: len(recorder.pushes("publicTrade.BTCUSDT")) > pushes_before, what="pushes again")
    finally:
        await stop(task)


async def test_stalled_socket_is_declared_dead_and_replaced(fake: FakeBybit) -> None:
    recorder = Recorder()
    # A short ack timeout: a reconnect may land while the fake still stalls and swallows the subscribe.
    protocol = BybitProtocol(endpoint=Endpoint.LINEAR, ping_interval=0.2, dead_after=0.6, ack_timeout=1.0)
    connection = Connection(protocol, f"{fake.url}/v5/public/linear", recorder, settings=FAST)
    task = await run_connection(connection)
    try:
        connection.want("tickers.BTCUSDT")
        await wait_until(lambda: recorder.of(Subscribed), what="subscribed")
        fake.stall("linear")
        await wait_until(lambda: connection.reconnects >= 1, timeout=10, what="a reconnect after the stall")
        first_reason = connection.last_end_reason or ""
        fake.unstall("linear")
        await wait_until(lambda: len(recorder.of(Subscribed)) >= 2, timeout=10, what="resubscribed")
        assert first_reason.startswith("dead")
    finally:
        await stop(task)


async def test_rejected_topic_is_reported_and_not_retried(fake: FakeBybit) -> None:
    recorder = Recorder()
    protocol = BybitProtocol(endpoint=Endpoint.LINEAR, ping_interval=0.5, dead_after=2)
    connection = Connection(protocol, f"{fake.url}/v5/public/linear", recorder, settings=FAST)
    fake.reject_topic("tickers.NOPEUSDT", "Invalid symbol :[tickers.NOPEUSDT]")
    task = await run_connection(connection)
    try:
        connection.want("tickers.NOPEUSDT")
        connection.want("tickers.BTCUSDT")
        await wait_until(lambda: recorder.of(SubscribeRejected), what="the rejection")
        (rejected,) = recorder.of(SubscribeRejected)
        assert isinstance(rejected, SubscribeRejected)
        assert rejected.reason == "Invalid symbol :[tickers.NOPEUSDT]"
        await fake.drop_connections()
        await wait_until(lambda: connection.reconnects == 1 and protocol.subscribed, what="back after a drop")
        assert fake.subscribe_requests("tickers.NOPEUSDT") == 1
    finally:
        await stop(task)


async def test_rejected_key_backs_off_instead_of_hot_looping(fake: FakeBybit) -> None:
    recorder = Recorder()
    protocol = BybitProtocol(
        endpoint=Endpoint.PRIVATE, credentials=Credentials("key", "wrong"), ping_interval=0.5, dead_after=2
    )
    connection = Connection(protocol, f"{fake.url}/v5/private", recorder, settings=FAST, rng=random.Random(1))
    task = await run_connection(connection)
    try:
        connection.want("order")
        await wait_until(lambda: len(fake.auth_attempts) >= 3, timeout=15, what="three auth attempts")
        times = [attempt.at for attempt in fake.auth_attempts[:3]]
        assert all(not attempt.success for attempt in fake.auth_attempts)
        assert recorder.of(AuthRejected)
        assert connection.auth_failures >= 2
        # Full jitter can pick small delays, but three attempts can never fit in a hot loop's few ms.
        assert times[2] - times[0] > 0.05
        assert fake.subscribe_requests("order") == 0
    finally:
        await stop(task)


async def test_a_stop_that_arrives_as_the_session_ends_still_stops_the_socket(fake: FakeBybit) -> None:
    # Found by a loaded fresh-clone run: Python 3.11's TaskGroup raises a child's error instead of the parent's
    # CancelledError when both happen at once, so `except* SessionEnded` swallowed the stop and the socket went on
    # reconnecting forever (a worker that never shuts down).
    task: asyncio.Task[None] | None = None

    async def cancel_on_rejection(endpoint: Endpoint, event: Event) -> None:
        if isinstance(event, AuthRejected) and task is not None:
            task.cancel()  # the session's reader raises SessionEnded right after this returns

    protocol = BybitProtocol(endpoint=Endpoint.PRIVATE, credentials=Credentials("key", "wrong"), ping_interval=0.5)
    connection = Connection(protocol, f"{fake.url}/v5/private", cancel_on_rejection, settings=FAST)
    task = await run_connection(connection)
    connection.want("order")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), timeout=15)
    assert len(fake.auth_attempts) == 1


async def test_bybits_conn_id_is_logged_on_connect_rejection_and_close(fake: FakeBybit) -> None:
    lines: list[tuple[str, dict[str, object]]] = []
    sink = logger.add(lambda message: lines.append((message.record["message"], dict(message.record["extra"]))))
    recorder = Recorder()
    protocol = BybitProtocol(endpoint=Endpoint.LINEAR, ping_interval=0.5, dead_after=2)
    connection = Connection(protocol, f"{fake.url}/v5/public/linear", recorder, settings=FAST)
    fake.reject_topic("tickers.NOPEUSDT", "Invalid symbol :[tickers.NOPEUSDT]")
    task = await run_connection(connection)
    try:
        connection.want("tickers.NOPEUSDT")
        await wait_until(lambda: recorder.of(SubscribeRejected), what="the rejection")
        (record,) = fake.open_connections
        (rejected,) = recorder.of(SubscribeRejected)
        assert isinstance(rejected, SubscribeRejected)
        assert rejected.conn_id == record.conn_id == connection.conn_id
        await fake.drop_connections()
        await wait_until(lambda: any(m == "bybit socket down; reconnecting" for m, _ in lines), what="the close")
    finally:
        await stop(task)
        logger.remove(sink)
    identified = [extra for message, extra in lines if message == "bybit socket identified"]
    assert identified[0]["conn_id"] == record.conn_id
    closed = [extra for message, extra in lines if message == "bybit socket down; reconnecting"]
    assert closed[0]["conn_id"] == record.conn_id
