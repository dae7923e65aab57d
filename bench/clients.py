"""The ingest clients under test, each reading one firehose stream until it has seen every trade.

- `ceiling`: the least any Python client must do: `websockets` recv + `msgspec.json.decode` into a small typed
  struct, nothing else (optionally with permessage-deflate, to show its cost).
- `ours`: the production `Worker` (its `on_event` → `_on_push` → `Normalizer`) on its own `Connection` +
  `BybitProtocol`, every `Outgoing` handed to a counting sink with the publisher's `offer_market` signature.
- `pybit`: Bybit's SDK `unified_trading.WebSocket` (websocket-client thread), no-op callback.
- `cryptofeed`: its `Bybit` feed (v5 linear), no-op trade callback, driven the way its `ConnectionHandler` does.

All report to a `Meter`, timed from the first data frame to the last one, so connecting is not measured.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import cast

import msgspec
from websockets.asyncio.client import connect

from shared.enums import Endpoint
from stream_worker.broker.publisher import Publisher
from stream_worker.broker.pumps import MARKET_BATCH
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.exchange.connection import ConnectionSettings
from stream_worker.exchange.sockets import Sockets
from stream_worker.settings import WorkerSettings
from stream_worker.state.persistence import Store, create_engine
from stream_worker.worker import Worker

TOPIC = "publicTrade.BTCUSDT"
SUBSCRIBE = '{"op":"subscribe","req_id":"bench","args":["publicTrade.BTCUSDT"]}'


@dataclass
class Meter:
    """Counts trades as a client delivers them; thread-safe enough for one writer (pybit's thread)."""

    expected_trades: int
    max_seconds: float = 600.0  # from the first frame: a slow client stops here, and its rate is still valid
    trades: int = 0
    frames: int = 0
    first: float | None = None
    last: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def hit(self, trades: int, frames: int = 1) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.trades += trades
        self.frames += frames
        if self.trades >= self.expected_trades or now - self.first >= self.max_seconds:
            self.done.set()

    async def wait_done(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.done.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.done.is_set()

    def result(self, per_frame: int) -> dict[str, float | int | bool]:
        elapsed = (self.last or 0.0) - (self.first or 0.0)
        # The first frame starts the clock, so it is not counted in the rate.
        trades = max(0, self.trades - per_frame)
        rate = trades / elapsed if elapsed > 0 else 0.0
        return {
            "trades": self.trades,
            "complete": self.trades >= self.expected_trades,
            "seconds": elapsed,
            "trades_per_s": rate,
            "frames_per_s": rate / per_frame,
        }


# -- ceiling ------------------------------------------------------------------------------------------------


class _Trade(msgspec.Struct):
    T: int
    s: str
    S: str
    v: str
    p: str
    i: str


class _Frame(msgspec.Struct):
    topic: str = ""
    data: list[_Trade] = []


_FRAME = msgspec.json.Decoder(_Frame)


async def run_ceiling(url: str, meter: Meter, *, compression: bool) -> None:
    decode = _FRAME.decode
    # The firehose is mid-send when we stop reading: a short close timeout keeps the bench from idling 10 s.
    deflate = "deflate" if compression else None
    async with connect(url, compression=deflate, ping_interval=None, close_timeout=0.5) as socket:
        await socket.send(SUBSCRIBE)
        async for message in socket:
            frame = decode(message)
            if frame.data:
                meter.hit(len(frame.data))
                if meter.done.is_set():
                    return


# -- ours ---------------------------------------------------------------------------------------------------


class CountingSink:
    """Stands in for the publisher: queues the events in a deque as `offer_market` does and counts them.

    The publisher's pump takes its batches of `MARKET_BATCH` from the head as they come; the sink lets
    go of each batch the same way (a deque kept at 10,000 instead would free every event cache-cold, a cost
    the publisher only pays while it is dropping). Every `per_frame` events make one `Meter` hit, so the
    meter costs about what it costs the other clients."""

    def __init__(self, meter: Meter | None = None, per_frame: int = 10) -> None:
        self.market: collections.deque[Outgoing] = collections.deque(maxlen=10_000)
        self.offered = 0
        self.on_handed_over: object = None  # the worker sets its metrics hook here, as on a Publisher
        self._meter = meter
        self._per_frame = per_frame

    def offer_market(self, item: Outgoing) -> None:
        market = self.market
        market.append(item)
        if len(market) >= MARKET_BATCH:
            market.clear()
        self.offered += 1
        if self._meter is not None and self.offered % self._per_frame == 0:
            self._meter.hit(self._per_frame)

    async def put_account(self, item: Outgoing) -> None:
        self.offer_market(item)


def bench_worker(public_base: str, publisher: object, *, compression: bool = False) -> Worker:
    """The production `Worker`, publishing to `publisher`; only its Bybit socket handlers are run (its public
    sockets connect to `public_base` + the category path), so PostgreSQL is never touched."""
    settings = WorkerSettings(public_ws_url=public_base, metrics_port=0, compression=compression)
    store = Store(create_engine(settings.database_url, timeout=5.0), timeout=5.0)  # lazy: never connects
    # The firehose closes after its frames: a reconnect must not start a second stream inside a measurement.
    connection_settings = ConnectionSettings(compression=compression, backoff_first=5.0, close_timeout=0.5)
    # A stand-in with `offer_market`, `put_account` and `on_handed_over` is enough for the socket handlers.
    sink = cast(Publisher, publisher)
    return Worker(settings, store=store, publisher=sink, connection_settings=connection_settings)


def our_connection(worker: Worker, endpoint: Endpoint = Endpoint.LINEAR, topics: tuple[str, ...] = (TOPIC,)) -> Sockets:
    """The worker's sockets for `endpoint`, wanting `topics` (what the reconciler would ask for)."""
    connection = worker.connections[endpoint]
    for topic in topics:
        connection.want(topic)
    return connection


async def run_ours(url: str, meter: Meter, *, compression: bool, timeout: float) -> None:
    """`Worker.on_event` → `_on_push` → `Normalizer` → `offer_market` on a counting sink: envelopes built,
    nothing sent. `url` is the firehose's base plus its options, without Bybit's path."""
    worker = bench_worker(url, CountingSink(meter), compression=compression)
    connection = our_connection(worker)
    running = asyncio.create_task(connection.run(), name="ours")
    try:
        await meter.wait_done(timeout)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


# -- pybit --------------------------------------------------------------------------------------------------


def _pybit_blocking(url: str, meter: Meter, timeout: float) -> None:
    from pybit import unified_trading

    # pybit builds its URL from this module constant when the socket is made (pybit/unified_trading.py).
    unified_trading.PUBLIC_WSS = url.replace("/v5/public/linear", "/v5/public/{CHANNEL_TYPE}")
    socket = unified_trading.WebSocket(
        channel_type="linear", testnet=False, retries=3
    )  # pybit raises after its last attempt, even a good one
    try:
        socket.trade_stream(symbol="BTCUSDT", callback=lambda message: meter.hit(len(message["data"])))
        meter.done.wait(timeout)
    finally:
        socket.exit()


async def run_pybit(url: str, meter: Meter, *, timeout: float) -> None:
    await asyncio.to_thread(_pybit_blocking, url, meter, timeout)


# -- cryptofeed ---------------------------------------------------------------------------------------------


async def run_cryptofeed(url: str, meter: Meter, per_frame: int, backend: object | None = None) -> None:
    """Cryptofeed's Bybit feed on our firehose. Its symbol list normally comes from Bybit's REST API at feed
    construction: we preload the one symbol instead. Its `WSAsyncConn` insists on `wss://` in `__init__`, but
    only `_open` uses the address: we swap in our `ws://` one after `feed.connect()` built the connection."""
    from cryptofeed.defines import PERPETUAL, TRADES
    from cryptofeed.exchanges import Bybit
    from cryptofeed.symbols import Symbol, Symbols

    symbol = Symbol("BTC", "USDT", type=PERPETUAL)
    Symbols.set(Bybit.id, {symbol.normalized: "BTCUSDT"}, {
        "tick_size": {symbol.normalized: Decimal("0.1")},
        "instrument_type": {symbol.normalized: PERPETUAL},
    })  # fmt: skip

    count = 0

    async def on_trade(trade: object, receipt_timestamp: float) -> None:
        nonlocal count
        count += 1
        if count == per_frame:  # a frame's worth, so the meter's frame count stays comparable
            count = 0
            meter.hit(per_frame)

    callback = backend if backend is not None else on_trade
    feed = Bybit(symbols=[symbol.normalized], channels=[TRADES], callbacks={TRADES: callback})
    (conn, subscribe, handler, _authenticate), *_ = feed.connect()
    conn.address = url
    async with conn.connect() as connection:
        await subscribe(connection)
        async for message in connection.read():
            await handler(message, connection, connection.last_message)
            if backend is not None:
                meter.hit(per_frame)
            if meter.done.is_set():
                return
