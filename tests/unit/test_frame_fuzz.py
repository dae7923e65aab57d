"""Whatever Bybit sends, the worker survives it, counts it, and never publishes a book it cannot vouch for.

Frames go through the worker's own hot path, driven without sockets: `BybitProtocol.receive` (decode), then
`Dispatcher.on_event` (books and tickers in `MarketState`, everything else in `Normalizer`), with real parts
that are simply never run (the publisher buffers, the state writer coalesces). Inputs are arbitrary JSON values,
arbitrary text, and the recorded real frames of ../shared/bybit/samples mutated: a key deleted, a value replaced
by any JSON value or by its string form, the text cut short.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.enums import Endpoint
from stream_worker.broker.publisher import Publisher
from stream_worker.bybit.books import BookState
from stream_worker.bybit.events import Malformed, Push, Unknown
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.bybit.signing import Credentials
from stream_worker.convergence import Convergence
from stream_worker.dispatch import Dispatcher, TraceIds
from stream_worker.envelopes.market import MarketState
from stream_worker.envelopes.normalize import Normalizer
from stream_worker.exchange.connection import Connection
from stream_worker.op_traces import OpTraces
from stream_worker.silence import SilenceWatch
from stream_worker.snapshots import Snapshots
from stream_worker.state.balances import BalanceWriter
from stream_worker.state.persistence import StateWriter, Store, create_engine
from tests.support.samples import SAMPLES

ENDPOINTS = (Endpoint.SPOT, Endpoint.LINEAR, Endpoint.INVERSE, Endpoint.OPTION, Endpoint.PRIVATE)
# Never connected: the dispatcher's parts only need a store to exist, not to answer.
STORE = Store(create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none", 1.0), 1.0)
ENCODER = msgspec.json.Encoder()


def _real_frames() -> list[tuple[str, Any]]:
    frames = []
    for path in sorted(SAMPLES.glob("*.json")):
        try:
            value = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(value, dict):
            frames.append((path.name, value))
    return frames


REAL = _real_frames()
BOOKS_AND_TICKERS = [value for _, value in REAL if str(value.get("topic", "")).startswith(("orderbook", "tickers"))]


def _endpoint_of(name: str, value: Any) -> Endpoint:
    topic = str(value.get("topic", "")) if isinstance(value, dict) else ""
    if name.startswith("private_") or topic in ("order", "execution", "position", "wallet", "greeks"):
        return Endpoint.PRIVATE
    for endpoint in (Endpoint.SPOT, Endpoint.INVERSE, Endpoint.OPTION):
        if endpoint.value in name:
            return endpoint
    return Endpoint.LINEAR


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["snapshot", "delta", "", "0", "1", "-1", "1e9", "NaN", "²", "100.5"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value[:6]):
            yield from _paths(child, (*prefix, index))


def _replace(value: Any, path: tuple[Any, ...], new: Any, *, delete: bool = False) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return copy


@st.composite
def mutated_frame(draw: st.DrawFn) -> tuple[Endpoint, str]:
    name, value = draw(st.sampled_from(REAL))
    endpoint = _endpoint_of(name, value)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(value))
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["delete", "replace", "stringify", "type", "numbers"]))
        if action == "delete" and path:
            value = _replace(value, path, None, delete=True)
        elif action == "replace":
            value = _replace(value, path, draw(json_values))
        elif action == "stringify":
            target = value
            for step in path:
                target = target[step]
            value = _replace(value, path, json.dumps(target))
        elif action == "type" and isinstance(value, dict):
            kind = draw(st.none() | st.text(max_size=10) | st.sampled_from(["", "partial"]))
            value = _replace(value, ("type",), kind)
        elif action == "numbers" and isinstance(value, dict):
            data = value.get("data")
            key = draw(st.sampled_from(["u", "seq", "ts", "cts", "cs"]))
            number = draw(st.integers(-(2**65), 2**65) | st.text("0123456789-.e", max_size=8))
            if key in ("u", "seq") and isinstance(data, dict):
                value = _replace(value, ("data", key), number)
            elif key not in ("u", "seq"):
                value = _replace(value, (key,), number)
    text = json.dumps(value, separators=(",", ":"))
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]  # cut short: a frame torn by a broken proxy
    return endpoint, text


any_frame = st.tuples(
    st.sampled_from(ENDPOINTS),
    json_values.map(json.dumps)
    | st.text(max_size=40)
    | json_values.map(lambda v: json.dumps({"topic": "orderbook.50.BTCUSDT", "type": "delta", "data": v}))
    | json_values.map(lambda v: json.dumps({"topic": "tickers.BTCUSDT", "type": "delta", "data": v})),
)
real_frame = st.sampled_from(REAL).map(lambda nv: (_endpoint_of(*nv), json.dumps(nv[1], separators=(",", ":"))))


class Harness:
    """One worker's sockets, markets, normalizers and dispatcher, with no socket and no broker behind them."""

    def __init__(self) -> None:
        self.publisher = Publisher("amqp://nobody@127.0.0.1:1/", market_buffer=100_000, account_buffer=100_000)
        state = StateWriter(STORE)
        self.markets = {e: MarketState(e) for e in ENDPOINTS if not e.private}
        self.connections: dict[Endpoint, Connection] = {}
        for endpoint in ENDPOINTS:
            credentials = Credentials("k", "s") if endpoint.private else None
            protocol = BybitProtocol(endpoint=endpoint, credentials=credentials)
            self.connections[endpoint] = Connection(protocol, "ws://unused", self._unused)
        op_traces = OpTraces()
        snapshots = Snapshots(
            markets=self.markets, connections=self.connections, publisher=self.publisher, resync=None, wall=lambda: 0.0
        )
        convergence = Convergence(
            store=STORE,
            state=state,
            publisher=self.publisher,
            connections=self.connections,
            markets=self.markets,
            cluster=lambda: None,  # type: ignore[arg-type,return-value]
            op_traces=op_traces,
            snapshots=snapshots,
            reconcile_interval=60,
        )
        self.dispatcher = Dispatcher(
            connections=self.connections,
            markets=self.markets,
            normalizers={e: Normalizer(e) for e in ENDPOINTS},
            publisher=self.publisher,
            balances=BalanceWriter(STORE, capacity=100_000),
            state=state,
            convergence=convergence,
            op_traces=op_traces,
            trace_id=TraceIds(),
            account_sync=lambda: None,
            snapshots=snapshots,
            silence=SilenceWatch({}),
        )
        for endpoint, connection in self.connections.items():
            # Socket open and every sample topic wanted, so resubscribes really go out as frames.
            connection.protocol.connection_made(0.0, 0)
            for value in BOOKS_AND_TICKERS:
                if not endpoint.private:
                    connection.protocol.want(str(value["topic"]))
            connection.protocol.frames_to_send()

    @staticmethod
    async def _unused(endpoint: Endpoint, event: object) -> None:
        raise AssertionError("frames are fed by the test, not by a socket")

    async def feed(self, endpoint: Endpoint, text: str, now: float) -> None:
        counted_before = self._counted()
        events = self.connections[endpoint].protocol.receive(text, now)
        for event in events:
            await self.dispatcher.on_event(endpoint, event)
        # Every frame is accounted for: a data frame or an unreadable one moves a counter; the rest (pongs,
        # acks, auth) are control events the protocol core has already acted on.
        if not events or any(isinstance(e, Push | Malformed | Unknown) for e in events):
            assert self._counted() > counted_before, f"a frame left no trace: {text[:200]!r} -> {events}"
        self.check()

    def _counted(self) -> int:
        return sum(self.dispatcher.counters.values())

    def check(self) -> None:
        for market in self.markets.values():
            for topic, book in market.books().items():
                bids, asks = book.top(1_000_000)
                if book.state is BookState.LIVE:
                    assert book.last_update_id is not None, topic
                    if bids and asks:
                        assert _price(bids[0][0]) < _price(asks[0][0]), f"{topic} published crossed"
                else:
                    assert (bids, asks) == ([], []), f"{topic} is invalid but still holds levels"
        market = self.publisher._market.events
        for item in market:  # everything handed over must be encodable for RabbitMQ
            ENCODER.encode(item.envelope)
        market.clear()
        while (account := self.publisher._account.get_nowait()) is not None:
            ENCODER.encode(account.envelope)


def _price(text: str) -> float:
    value = float(text)
    assert math.isfinite(value)
    return value


def run(frames: list[tuple[Endpoint, str]]) -> Harness:
    async def go() -> Harness:
        harness = Harness()
        for index, (endpoint, text) in enumerate(frames):
            await harness.feed(endpoint, text, float(index))
        return harness

    return asyncio.run(go())


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(any_frame, max_size=15))
def test_arbitrary_json_and_text_never_raise_and_are_all_counted(frames: list[tuple[Endpoint, str]]) -> None:
    run(frames)


@FUZZ
@given(st.lists(real_frame | mutated_frame(), min_size=1, max_size=25))
def test_mutated_real_frames_never_raise_and_books_stay_consistent(frames: list[tuple[Endpoint, str]]) -> None:
    run(frames)


def test_every_real_sample_goes_through_without_a_malformed_count() -> None:
    harness = run([(_endpoint_of(name, value), json.dumps(value)) for name, value in REAL])
    # Real frames decode: whatever they are, none is unreadable at the frame level.
    assert not [key for key in harness.dispatcher.counters if key.startswith("frames:malformed")]


def test_a_book_push_without_type_invalidates_and_resubscribes_instead_of_ending_the_worker() -> None:
    snapshot = next(v for n, v in REAL if n == "public_orderbook_snapshot_linear.json")
    untyped = {key: value for key, value in snapshot.items() if key != "type"}
    harness = run([(Endpoint.LINEAR, json.dumps(snapshot)), (Endpoint.LINEAR, json.dumps(untyped))])
    market = harness.markets[Endpoint.LINEAR]
    assert market.counters["malformed:book:no_type"] == 1
    assert market.counters["book_invalid:malformed"] == 1
    (book,) = market.books().values()
    assert not book.is_valid
    protocol = harness.connections[Endpoint.LINEAR].protocol
    assert snapshot["topic"] in protocol.pending  # the resubscribe went out


def test_a_book_frame_whose_envelope_cannot_be_read_still_invalidates_that_book() -> None:
    snapshot = next(v for n, v in REAL if n == "public_orderbook_snapshot_linear.json")
    broken = dict(snapshot, cts=1.5)  # a float where Bybit sends whole milliseconds
    harness = run([(Endpoint.LINEAR, json.dumps(snapshot)), (Endpoint.LINEAR, json.dumps(broken))])
    market = harness.markets[Endpoint.LINEAR]
    assert harness.dispatcher.counters["frames:malformed:bad_cts"] == 1
    assert market.counters["malformed:book:envelope"] == 1
    assert not next(iter(market.books().values())).is_valid


def test_numeric_strings_are_read_alike_for_ts_cts_and_cs() -> None:
    protocol = BybitProtocol(endpoint=Endpoint.LINEAR)
    (push,) = protocol.receive('{"topic":"tickers.X","type":"delta","ts":"5","cts":"6","cs":"7","data":{}}', 0.0)
    assert isinstance(push, Push)
    assert (push.ts, push.cts, push.cs) == (5, 6, 7)
    (bad,) = protocol.receive('{"topic":"tickers.X","type":"delta","cs":"x7","data":{}}', 0.0)
    assert isinstance(bad, Malformed)
    assert (bad.kind, bad.topic) == ("bad_cs", "tickers.X")
