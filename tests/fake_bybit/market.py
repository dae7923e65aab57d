"""Public market-data streams other than books (tickers, trades, klines, liquidations), and the factory
that picks the right stream and recorded sample for a subscribed topic.

Pure: no I/O, no clock (callers pass `now_ms`), randomness only from the injected `random.Random`. Each
message starts from the recorded sample of its category (PROTOCOL.md §6), so key order and extra fields
follow what Bybit sent; only values move.
"""

from __future__ import annotations

import random
import re
import uuid
from decimal import Decimal
from typing import Any, Protocol

from tests.fake_bybit.books import BookStream, PriceGrid
from tests.fake_bybit.samples import Samples
from tests.fake_bybit.topics import Category, PublicTopic

JsonObject = dict[str, Any]


class MarketStream(Protocol):
    topic: str

    def snapshot(self, now_ms: int) -> JsonObject | None:
        """What a new subscriber gets first, or None for event streams (trades, klines, liquidations)."""

    def next(self, now_ms: int) -> JsonObject:
        """The next regular push for every subscriber."""


class _Clocked:
    """Strictly increasing `ts` even when two pushes share a millisecond."""

    _ts = 0

    def _stamp(self, now_ms: int) -> int:
        self._ts = max(now_ms, self._ts + 1)
        return self._ts


def _places(number: str) -> int:
    return len(number.partition(".")[2])


def _bump(value: str, change: Decimal, *, signed: bool = False) -> str:
    """`value` + `change`, printed with `value`'s own number of decimals; below zero only if `signed`."""
    result = Decimal(value) + change
    if not signed:
        result = max(result, Decimal(0))
    return f"{result:.{_places(value)}f}"


def _fresh_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_FUTURES_SUFFIX = re.compile(r"[A-Z]\d{2}$")  # inverse futures: BTCUSDU23, BTCUSDH24


def _ticker_sample(category: Category, symbol: str) -> str:
    if category == "linear":
        return "public_tickers_linear_futures" if "-" in symbol else "public_tickers_linear"
    if category == "inverse":
        futures = _FUTURES_SUFFIX.search(symbol) is not None
        return "public_tickers_inverse_futures_snapshot" if futures else "public_tickers_inverse_snapshot"
    return f"public_tickers_{category}"


class TickerStream(_Clocked):
    """`tickers.{symbol}`: linear/inverse: a snapshot, then partial deltas; spot/option: snapshots (§6.3)."""

    # Field groups that change together; a delta carries one or two of them (§8).
    _GROUPS = (
        ("lastPrice", "tickDirection", "volume24h", "turnover24h", "price24hPcnt"),
        ("bid1Price", "bid1Size", "ask1Price", "ask1Size"),
        ("markPrice", "indexPrice"),
        ("openInterest", "openInterestValue"),
    )

    def __init__(self, *, topic: str, category: Category, symbol: str, sample: JsonObject, rng: random.Random):
        self.topic, self.category = topic, category
        self._rng = rng
        self._template = sample
        self.state: JsonObject = dict(sample["data"])
        self.state["symbol"] = symbol
        self.cs: int = sample.get("cs", rng.randint(1_000_000_000, 90_000_000_000))
        self._seq = rng.randint(1_000_000_000, 9_000_000_000)  # option ids only
        price_field = "bidPrice" if category == "option" else "lastPrice"
        self._tick = Decimal(1).scaleb(-_places(self.state[price_field]))

    @property
    def has_deltas(self) -> bool:
        return self.category in ("linear", "inverse")

    def snapshot(self, now_ms: int) -> JsonObject:
        return self._message("snapshot", dict(self.state), now_ms)

    def next(self, now_ms: int) -> JsonObject:
        self.cs += self._rng.randint(1, 50)
        if not self.has_deltas:
            self._move_full()
            return self.snapshot(now_ms)
        return self._message("delta", self._delta(), now_ms)

    def _message(self, type_: str, data: JsonObject, now_ms: int) -> JsonObject:
        message = dict(self._template)
        ts = self._stamp(now_ms)
        message.update(topic=self.topic, type=type_, data=data, ts=ts)
        if "cs" in message:
            message["cs"] = self.cs
        if "id" in message:
            self._seq += self._rng.randint(1, 500)
            message["id"] = f"{self.topic}-{self._seq}-{ts}"
        return message

    def _delta(self) -> JsonObject:
        rng, state = self._rng, self.state
        groups = [group for group in self._GROUPS if all(field in state for field in group)]
        changed: JsonObject = {}
        for group in rng.sample(groups, k=rng.randint(1, 2)):
            changed.update(self._move(group))
        state.update(changed)
        delta: JsonObject = {"symbol": state["symbol"]}
        delta.update(changed)
        # Captured deltas repeat unchanged values (public_tickers_inverse_delta.json), and fields that are
        # "" in the snapshot (fundingRate on futures, preOpenPrice, ...) come again as "" (§8 rule 5).
        unchanged = [field for field in state if field not in delta]
        for field in rng.sample(unchanged, k=min(len(unchanged), rng.randint(1, 3))):
            delta[field] = state[field]
        for field in (field for field in state if state[field] == "" and rng.random() < 0.3):
            delta[field] = ""
        return delta

    def _move(self, group: tuple[str, ...]) -> JsonObject:
        rng, state, tick = self._rng, self.state, self._tick
        if group[0] == "lastPrice":
            step = tick * rng.randint(-3, 3)
            direction = "PlusTick" if step > 0 else "MinusTick" if step < 0 else "ZeroPlusTick"
            return {
                "lastPrice": _bump(state["lastPrice"], step),
                "tickDirection": direction,
                "volume24h": _bump(state["volume24h"], Decimal(rng.randint(1, 100))),
                "turnover24h": _bump(state["turnover24h"], Decimal(rng.randint(100, 10_000))),
                "price24hPcnt": _bump(state["price24hPcnt"], Decimal(rng.randint(-5, 5)).scaleb(-6), signed=True),
            }
        if group[0] == "bid1Price":
            bid = _bump(state["lastPrice"], -tick * rng.randint(0, 1))
            ask = _bump(bid, tick * rng.randint(1, 2))
            return {
                "bid1Price": bid,
                "bid1Size": _bump(state["bid1Size"], Decimal(rng.randint(-5, 5))),
                "ask1Price": ask,
                "ask1Size": _bump(state["ask1Size"], Decimal(rng.randint(-5, 5))),
            }
        if group[0] == "markPrice":
            return {
                "markPrice": _bump(state["markPrice"], tick * rng.randint(-2, 2)),
                "indexPrice": _bump(state["indexPrice"], tick * rng.randint(-2, 2)),
            }
        return {
            "openInterest": _bump(state["openInterest"], Decimal(rng.randint(-10, 10))),
            "openInterestValue": _bump(state["openInterestValue"], Decimal(rng.randint(-500, 500))),
        }

    def _move_full(self) -> None:
        """Spot and option: every message is complete, so move a few prices and send everything."""
        rng, state, tick = self._rng, self.state, self._tick
        for field in ("lastPrice", "markPrice", "indexPrice", "underlyingPrice", "usdIndexPrice"):
            if state.get(field):
                state[field] = _bump(state[field], tick * rng.randint(-3, 3))
        for field in ("volume24h", "turnover24h", "totalVolume", "totalTurnover"):
            if state.get(field):
                state[field] = _bump(state[field], Decimal(rng.randint(0, 10)))


class TradeStream(_Clocked):
    """`publicTrade.{symbol}` (option: `publicTrade.{baseCoin}`): 1-3 trades per message sharing `seq`."""

    def __init__(
        self,
        *,
        topic: str,
        category: Category,
        symbol: str,
        sample: JsonObject,
        grid: PriceGrid,
        rng: random.Random,
    ):
        self.topic, self.category = topic, category
        self._rng, self._grid = rng, grid
        self._template = sample
        self._row_template: JsonObject = dict(sample["data"][0])
        first_symbol: str = self._row_template["s"]
        # Option trades name the option: BTC-28APR23-29500-C becomes {coin}-28APR23-29500-C.
        self._symbol = symbol + first_symbol[first_symbol.index("-") :] if category == "option" else symbol
        self._price = Decimal(self._row_template["p"])
        self._size_places = _places(self._row_template["v"])
        self._last_direction = "PlusTick"
        self._spot_id = int(self._row_template["i"]) if category == "spot" else 0
        self._seq = self._row_template.get("seq", rng.randint(1_000_000_000, 9_000_000_000))

    def snapshot(self, now_ms: int) -> None:
        return None

    def next(self, now_ms: int) -> JsonObject:
        rng = self._rng
        ts = self._stamp(now_ms)
        self._seq += rng.randint(1, 40)
        rows = [self._row(ts - 2) for _ in range(rng.randint(1, 3))]
        message = dict(self._template)
        message.update(topic=self.topic, ts=ts, data=rows)
        if "id" in message:
            message["id"] = f"{self.topic}-{self._seq}-{ts}"
        return message

    def _row(self, fill_ms: int) -> JsonObject:
        rng, grid = self._rng, self._grid
        previous = self._price
        self._price = max(grid.tick, self._price + grid.tick * rng.randint(-2, 2))
        size_unit = Decimal(1).scaleb(-self._size_places)
        row = dict(self._row_template)
        row.update(
            T=fill_ms,
            s=self._symbol,
            S=rng.choice(("Buy", "Sell")),
            v=f"{rng.randint(1, 5000) * size_unit:.{self._size_places}f}",
            p=f"{self._price:.{_places(self._row_template['p'])}f}",
            BT=False,
        )
        if self.category == "spot":
            self._spot_id += 1
            row["i"] = str(self._spot_id)  # spot ids are numeric strings (§6.1)
        else:
            row["i"] = _fresh_uuid(rng)
        if "L" in row:
            if self._price != previous:
                self._last_direction = "PlusTick" if self._price > previous else "MinusTick"
                row["L"] = self._last_direction
            else:
                row["L"] = "Zero" + self._last_direction
        if self.category != "option":
            row["seq"] = self._seq  # shared by every trade of the message (§12: never dedupe by seq)
        return row


_INTERVAL_MS = {"D": 86_400_000, "W": 7 * 86_400_000, "M": 30 * 86_400_000}


class KlineStream(_Clocked):
    """`kline.{interval}.{symbol}`: the open candle again and again, then once with `confirm: true` (§6.4)."""

    def __init__(self, *, topic: str, symbol: str, interval: str, sample: JsonObject, rng: random.Random):
        self.topic = topic
        self._rng = rng
        self._template = sample
        self._candle: JsonObject = dict(sample["data"][0])
        self._candle.update(interval=interval)
        self._symbol = symbol
        self._length = _INTERVAL_MS.get(interval) or int(interval) * 60_000
        self._started = False
        self._pushes_left = 0

    def snapshot(self, now_ms: int) -> None:
        return None

    def next(self, now_ms: int) -> JsonObject:
        ts = self._stamp(now_ms)
        candle = self._candle
        if not self._started:
            self._open(now_ms - now_ms % self._length, Decimal(candle["close"]))
        elif self._pushes_left == 0:
            self._open(candle["end"] + 1, Decimal(candle["close"]))
        if self._pushes_left == 1:
            candle["confirm"] = True
        else:
            close = Decimal(candle["close"]) + Decimal("0.5") * self._rng.randint(-4, 4)
            candle.update(
                close=_plain(close),
                high=_plain(max(Decimal(candle["high"]), close)),
                low=_plain(min(Decimal(candle["low"]), close)),
                volume=_plain(Decimal(candle["volume"]) + Decimal(self._rng.randint(1, 500)).scaleb(-3)),
                turnover=_plain(Decimal(candle["turnover"]) + close * Decimal("0.001")),
            )
        candle["timestamp"] = ts
        self._pushes_left -= 1
        message = dict(self._template)
        message.update(topic=self.topic, data=[dict(candle)], ts=ts)
        return message

    def _open(self, start: int, price: Decimal) -> None:
        self._started = True
        self._pushes_left = self._rng.randint(3, 6)
        self._candle.update(
            start=start,
            end=start + self._length - 1,
            open=_plain(price),
            close=_plain(price),
            high=_plain(price),
            low=_plain(price),
            volume="0",
            turnover="0",
            confirm=False,
        )


def _plain(number: Decimal) -> str:
    """Kline numbers carry no trailing zeros in the sample ("16677", "16649.5")."""
    return f"{number.normalize():f}"


class LiquidationStream(_Clocked):
    """`allLiquidation.{symbol}` (linear, inverse): every liquidation as `{T, s, S, v, p}` rows (§6.5)."""

    def __init__(self, *, topic: str, symbol: str, sample: JsonObject, rng: random.Random):
        self.topic = topic
        self._rng = rng
        self._template = sample
        self._row: JsonObject = dict(sample["data"][0])
        self._row["s"] = symbol
        self._price_places = _places(self._row["p"])

    def snapshot(self, now_ms: int) -> None:
        return None

    def next(self, now_ms: int) -> JsonObject:
        rng = self._rng
        ts = self._stamp(now_ms)
        rows = []
        for _ in range(rng.randint(1, 2)):
            tick = Decimal(1).scaleb(-self._price_places)
            self._row["p"] = _bump(self._row["p"], tick * rng.randint(-20, 20))
            row = dict(self._row)
            row.update(T=ts - rng.randint(1, 400), S=rng.choice(("Buy", "Sell")), v=str(rng.randint(1, 20_000)))
            rows.append(row)
        message = dict(self._template)
        message.update(topic=self.topic, ts=ts, data=rows)
        return message


_BOOK_SAMPLES: dict[Category, str] = {
    "spot": "public_orderbook_snapshot_spot",
    "linear": "public_orderbook_snapshot_linear",
    "option": "public_orderbook_snapshot_option_2024",
}
_TRADE_SAMPLES: dict[Category, str] = {
    "spot": "public_publicTrade_spot",
    "linear": "public_publicTrade_linear",
    "inverse": "public_publicTrade_inverse",
    "option": "public_publicTrade_option",
}


def price_grid(category: Category, samples: Samples) -> PriceGrid:
    """Tick and formats for a category, from its recorded book (inverse has none: its ticker's top)."""
    if category == "inverse":
        return PriceGrid.from_ticker_message(samples.get("public_tickers_inverse_snapshot"))
    return PriceGrid.from_book_message(samples.get(_BOOK_SAMPLES[category]))


def new_stream(category: Category, topic: PublicTopic, samples: Samples, rng: random.Random) -> MarketStream:
    """The stream that feeds `topic` on `category`'s endpoint."""
    name, symbol = topic.name, topic.symbol
    if topic.kind == "orderbook":
        grid = price_grid(category, samples)
        return BookStream(topic=name, category=category, symbol=symbol, depth=topic.depth, grid=grid, rng=rng)
    if topic.kind == "tickers":
        sample = samples.get(_ticker_sample(category, symbol))
        return TickerStream(topic=name, category=category, symbol=symbol, sample=sample, rng=rng)
    if topic.kind == "publicTrade":
        sample = samples.get(_TRADE_SAMPLES[category])
        grid = price_grid(category, samples)
        return TradeStream(topic=name, category=category, symbol=symbol, sample=sample, grid=grid, rng=rng)
    if topic.kind == "kline":
        sample = samples.get("public_kline")
        return KlineStream(topic=name, symbol=symbol, interval=topic.interval, sample=sample, rng=rng)
    return LiquidationStream(topic=name, symbol=symbol, sample=samples.get("public_allLiquidation"), rng=rng)
