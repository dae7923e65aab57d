"""Order-book streams: a book the fake owns, and the snapshot/delta messages that describe it.

Pure: no I/O, no clock (the caller passes `now_ms`), randomness only from the injected `random.Random`.
Invariants the stream holds after every regular message, checked by `check()` (PROTOCOL.md §7):
- best bid < best ask, prices and sizes > 0, at most `depth` levels a side;
- `u` goes up by exactly 1 per message, `seq` goes up by random steps, `ts` and `cts` go up;
- a delta only deletes (`"0"`) levels the client holds, so a faithful client book equals ours.
Fault messages (`fault`) break these on purpose and are never applied to the fake's own book, except
where a real server would have moved on too (gap, restart, mid-stream snapshot).
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, get_args

from tests.fake_bybit.topics import Category

JsonObject = dict[str, Any]
Side = dict[Decimal, Decimal]
BookState = tuple[tuple[tuple[Decimal, Decimal], ...], tuple[tuple[Decimal, Decimal], ...]]  # bids best first, asks

# How many past states each book remembers for `state_at`: at the chaos run's 10 pushes a second, 100 s of
# history, far more than any consumer lags behind; older ones are forgotten so a long run stays bounded.
HISTORY = 1000

BookFault = Literal["gap", "stale", "restart", "crossed", "snapshot", "empty"]
BOOK_FAULTS: tuple[str, ...] = get_args(BookFault)


class BookInvariantError(AssertionError):
    """The fake's own book broke an invariant: a bug in the generator, never a client's fault."""


@dataclass(frozen=True, kw_only=True)
class PriceGrid:
    """Tick, number formats and starting prices, read off a recorded book or ticker."""

    tick: Decimal
    price_places: int
    size_places: int
    best_bid: Decimal
    best_ask: Decimal
    max_size: Decimal

    @classmethod
    def from_levels(cls, bids: list[list[str]], asks: list[list[str]]) -> PriceGrid:
        prices = [level[0] for level in bids + asks]
        sizes = [level[1] for level in bids + asks]
        price_places = max(_places(price) for price in prices)
        units = [int(Decimal(price).scaleb(price_places)) for price in prices]
        # The tick is the largest step every recorded price sits on: 28555.20/28555.30 -> 0.10.
        step = math.gcd(*(unit - units[0] for unit in units[1:])) or 1
        return cls(
            tick=Decimal(step).scaleb(-price_places),
            price_places=price_places,
            size_places=max(_places(size) for size in sizes),
            best_bid=max(Decimal(level[0]) for level in bids),
            best_ask=min(Decimal(level[0]) for level in asks),
            max_size=max(Decimal(size) for size in sizes),
        )

    @classmethod
    def from_book_message(cls, message: JsonObject) -> PriceGrid:
        return cls.from_levels(message["data"]["b"], message["data"]["a"])

    @classmethod
    def from_ticker_message(cls, message: JsonObject) -> PriceGrid:
        data = message["data"]
        return cls.from_levels([[data["bid1Price"], data["bid1Size"]]], [[data["ask1Price"], data["ask1Size"]]])

    def price_text(self, price: Decimal) -> str:
        return f"{price:.{self.price_places}f}"

    def size_text(self, size: Decimal) -> str:
        return f"{size:.{self.size_places}f}"


def _places(number: str) -> int:
    return len(number.partition(".")[2])


class BookStream:
    """One `orderbook.{depth}.{symbol}` topic: the fake's book and the messages that carry it."""

    def __init__(
        self, *, topic: str, category: Category, symbol: str, depth: int, grid: PriceGrid, rng: random.Random
    ) -> None:
        self.topic, self.category, self.symbol, self.depth = topic, category, symbol, depth
        self.grid = grid
        self._rng = rng
        self._size_unit = Decimal(1).scaleb(-grid.size_places)
        self._max_size_units = max(1, int(grid.max_size * 2 / self._size_unit))
        self.bids: Side = {}
        self.asks: Side = {}
        self._fill(grid.best_bid, grid.best_ask)
        self.u = rng.randint(1_000_000, 90_000_000)
        self.seq = rng.randint(1_000_000_000, 90_000_000_000)
        self._ts = 0
        self._cts_lag = rng.randint(1, 5)
        self._last_level1: JsonObject | None = None
        # The book after every `u` it passed through, keyed by (u, seq): `u` alone repeats after a `u == 1`
        # restart, `seq` never goes back. A checker compares a client's rebuilt book against it.
        self._history: OrderedDict[tuple[int, int], BookState] = OrderedDict()
        self.check()
        self._remember()

    @property
    def level1(self) -> bool:
        """Level-1 books are snapshot-only since 2025-03 (§7.1)."""
        return self.depth == 1

    # ---- the regular stream -------------------------------------------------------------------
    def snapshot(self, now_ms: int) -> JsonObject:
        """The current book at the current `u`: what a new subscriber gets first (§5.4)."""
        return self._message("snapshot", self._levels(self.bids, self.asks), now_ms)

    def next(self, now_ms: int) -> JsonObject:
        """The next regular message: a delta, or for level 1 a changed snapshot; `u` + 1."""
        if self.level1:
            self._move_top()
            self._advance(1)
            self.check()
            message = self.snapshot(now_ms)
            self._last_level1 = message
            return message
        before_bids, before_asks = dict(self.bids), dict(self.asks)
        self._random_changes()
        self._advance(1)
        self.check()
        changes = (_diff(before_bids, self.bids, reverse=True), _diff(before_asks, self.asks, reverse=False))
        return self._message("delta", self._texts(*changes), now_ms)

    def repeat_level1(self, now_ms: int) -> JsonObject:
        """§7.1: an unchanged level-1 book is pushed again after 3 s with the same `u`."""
        if not self.level1:
            raise ValueError(f"{self.topic}: only level-1 books repeat unchanged snapshots")
        message = self.snapshot(now_ms)
        self._last_level1 = message
        return message

    # ---- faults -------------------------------------------------------------------------------
    def fault(self, kind: BookFault, now_ms: int) -> JsonObject:
        """A message that breaks the stream in the way `kind` names (§13 "Books")."""
        if kind == "gap":
            # The message with u+1 "was lost": the fake moves on as if it had been sent.
            message = self.next(now_ms)
            self._advance(1)
            message["data"]["u"] = self.u
            message["data"]["seq"] = self.seq
            return message
        if kind == "stale":
            return self._stale(now_ms)
        if kind == "restart":
            # §7.1: after a service restart Bybit sends a snapshot with u == 1.
            # The restarted book is rebuilt around the same top of book, with new levels and sizes.
            self._fill(self._best_bid(), self._best_ask())
            self.u = 0
            self._advance(1)
            self.check()
            return self.snapshot(now_ms)
        if kind == "crossed":
            return self._crossed(now_ms)
        if kind == "snapshot":
            # Bybit re-sends a snapshot mid-stream when something went wrong on its side (§7.1).
            if not self.level1:
                self._random_changes()
            self._advance(1)
            self.check()
            return self.snapshot(now_ms)
        if kind == "empty":
            if self.level1:
                raise ValueError(f"{self.topic}: level-1 books are snapshot-only, there is no empty delta")
            self._advance(1)
            return self._message("delta", ([], []), now_ms)
        raise ValueError(f"unknown book fault {kind!r}; expected one of {BOOK_FAULTS}")

    def _stale(self, now_ms: int) -> JsonObject:
        """An old `u` (last - 1, or last itself) carrying sizes the book never had: a client must drop it."""
        price = self._rng.choice(list(self.bids))
        bogus = {price: self.bids[price] + self._size_unit}
        texts = self._texts(_diff({}, bogus, reverse=True), [])
        type_ = "snapshot" if self.level1 else "delta"
        message = self._message(type_, texts, now_ms)
        # u == 1 is not stale but a restart (§7.1): right after a restart repeat the current u instead.
        message["data"]["u"] = self.u - 1 if self.u - 1 != 1 else self.u
        message["data"]["seq"] = self.seq - self._rng.randint(1, 5)
        return message

    def _crossed(self, now_ms: int) -> JsonObject:
        """A bid at or above the best ask. Never applied to the fake's book; only `u` moves on."""
        price = self._best_ask() + self.grid.tick * self._rng.randint(0, 2)
        self._advance(1)
        if self.level1:
            bids = [[self.grid.price_text(price), self.grid.size_text(self._random_size())]]
            asks = [[self.grid.price_text(self._best_ask()), self.grid.size_text(self.asks[self._best_ask()])]]
            return self._message("snapshot", (bids, asks), now_ms)
        bids = [[self.grid.price_text(price), self.grid.size_text(self._random_size())]]
        return self._message("delta", (bids, []), now_ms)

    # ---- invariants ---------------------------------------------------------------------------
    def check(self) -> None:
        for name, side in (("bids", self.bids), ("asks", self.asks)):
            if len(side) > self.depth:
                raise BookInvariantError(f"{self.topic}: {len(side)} {name} > depth {self.depth}")
            if any(price <= 0 or size <= 0 for price, size in side.items()):
                raise BookInvariantError(f"{self.topic}: non-positive price or size in {name}")
        if self.bids and self.asks and self._best_bid() >= self._best_ask():
            raise BookInvariantError(f"{self.topic}: crossed, {self._best_bid()} >= {self._best_ask()}")

    def state_at(self, u: int, seq: int) -> BookState | None:
        """The fake's book right after it moved to (`u`, `seq`); None if that is older than HISTORY states."""
        return self._history.get((u, seq))

    def _remember(self) -> None:
        self._history[(self.u, self.seq)] = (
            tuple(sorted(self.bids.items(), reverse=True)),
            tuple(sorted(self.asks.items())),
        )
        while len(self._history) > HISTORY:
            self._history.popitem(last=False)

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        """The fake's book as Bybit would print it: bids descending, asks ascending."""
        return self._levels(self.bids, self.asks)

    # ---- internals ----------------------------------------------------------------------------
    def _advance(self, steps: int) -> None:
        self.u += steps
        # seq is the engine's cross sequence, shared with other topics, so it skips values (§7.2).
        self.seq += self._rng.randint(1, 40)
        self._remember()

    def _message(self, type_: str, levels: tuple[list[list[str]], list[list[str]]], now_ms: int) -> JsonObject:
        self._ts = max(now_ms, self._ts + 1)
        data = {"s": self.symbol, "b": levels[0], "a": levels[1], "u": self.u, "seq": self.seq}
        cts = self._ts - self._cts_lag
        # Key order follows each category's recordings (§6: it differs; clients must not care).
        if self.category == "option":
            topic_id = f"{self.topic}-{self.seq}-{self._ts}"
            return {
                "topic": self.topic,
                "ts": self._ts,
                "type": type_,
                "id": topic_id,
                "data": data,
                "cts": cts,
            }
        if self.category == "spot":
            return {"topic": self.topic, "ts": self._ts, "type": type_, "data": data, "cts": cts}
        return {"topic": self.topic, "type": type_, "ts": self._ts, "data": data, "cts": cts}

    def _levels(self, bids: Side, asks: Side) -> tuple[list[list[str]], list[list[str]]]:
        return self._texts(sorted(bids.items(), reverse=True), sorted(asks.items()))

    def _texts(
        self, bids: list[tuple[Decimal, Decimal]], asks: list[tuple[Decimal, Decimal]]
    ) -> tuple[list[list[str]], list[list[str]]]:
        grid = self.grid

        def text(size: Decimal) -> str:
            return "0" if size == 0 else grid.size_text(size)

        return (
            [[grid.price_text(price), text(size)] for price, size in bids],
            [[grid.price_text(price), text(size)] for price, size in asks],
        )

    def _fill(self, best_bid: Decimal, best_ask: Decimal) -> None:
        self.bids, self.asks = {}, {}
        price = best_bid
        while len(self.bids) < self.depth and price > 0:
            self.bids[price] = self._random_size()
            price -= self.grid.tick * self._rng.randint(1, 3)
        price = best_ask
        while len(self.asks) < self.depth:
            self.asks[price] = self._random_size()
            price += self.grid.tick * self._rng.randint(1, 3)

    def _random_size(self) -> Decimal:
        return self._rng.randint(1, self._max_size_units) * self._size_unit

    def _best_bid(self) -> Decimal:
        return max(self.bids)

    def _best_ask(self) -> Decimal:
        return min(self.asks)

    def _move_top(self) -> None:
        """Level 1: walk the top of book by a tick or change a size, never crossing."""
        rng, tick = self._rng, self.grid.tick
        bid, ask = self._best_bid(), self._best_ask()
        move = rng.choice(("bid_size", "ask_size", "up", "down"))
        if move == "up":
            bid, ask = bid + tick, ask + tick
        elif move == "down" and bid - tick > 0:
            bid, ask = bid - tick, ask - tick
        bid_size = self._random_size() if move != "ask_size" else self.bids[self._best_bid()]
        ask_size = self._random_size() if move != "bid_size" else self.asks[self._best_ask()]
        self.bids, self.asks = {bid: bid_size}, {ask: ask_size}

    def _random_changes(self) -> None:
        """1-4 updates, inserts and deletes; the caller sends the net difference as one delta."""
        rng = self._rng
        for _ in range(rng.randint(1, 4)):
            is_bid = rng.random() < 0.5
            operation = rng.choices(("update", "insert", "delete"), weights=(5, 3, 2))[0]
            if operation == "update":
                self._update(self.bids if is_bid else self.asks)
            elif operation == "insert":
                self._insert(is_bid)
            else:
                self._delete(is_bid)

    def _update(self, side: Side) -> None:
        price = self._rng.choice(list(side))
        size = self._random_size()
        side[price] = size if size != side[price] else size + self._size_unit

    def _insert(self, is_bid: bool) -> None:
        rng, tick = self._rng, self.grid.tick
        side = self.bids if is_bid else self.asks
        best_bid, best_ask = self._best_bid(), self._best_ask()
        inside_ticks = int((best_ask - best_bid) / tick) - 1
        if inside_ticks > 0 and rng.random() < 0.3:
            # Improve the best price, staying strictly inside the spread.
            offset = tick * rng.randint(1, inside_ticks)
            price = best_bid + offset if is_bid else best_ask - offset
        else:
            worst = min(side) if is_bid else max(side)
            span = max(1, int(abs(worst - (best_bid if is_bid else best_ask)) / tick))
            offset = tick * rng.randint(1, span)
            price = best_bid - offset if is_bid else best_ask + offset
        if price <= 0 or price in side:
            return
        side[price] = self._random_size()
        if len(side) > self.depth:
            # The level pushed out of the top-N window leaves with a "0" (§7.3 rule 5, our expectation).
            del side[min(side) if is_bid else max(side)]

    def _delete(self, is_bid: bool) -> None:
        side = self.bids if is_bid else self.asks
        if len(side) < 2:
            return
        del side[self._rng.choice(list(side))]
        # The next level from beyond the window moves into the top N, so it arrives as an insert.
        worst = min(side) if is_bid else max(side)
        step = self.grid.tick * self._rng.randint(1, 3)
        refill = worst - step if is_bid else worst + step
        if refill > 0:
            side[refill] = self._random_size()


def _diff(before: Side, after: Side, *, reverse: bool) -> list[tuple[Decimal, Decimal]]:
    """Levels that changed, with size 0 for deleted ones, sorted like the book side."""
    changed = {price: size for price, size in after.items() if before.get(price) != size}
    changed.update({price: Decimal(0) for price in before if price not in after})
    return sorted(changed.items(), reverse=reverse)


class LocalBook:
    """A plain client-side book (§7.3 rules 1 and 4b, no sequence checks), for asserting on pushes."""

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.u: int | None = None

    def apply(self, message: JsonObject) -> None:
        data = message["data"]
        if message["type"] == "snapshot" or data["u"] == 1:
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, data["b"]), (self.asks, data["a"])):
            for price, size in levels:
                if Decimal(size) == 0:
                    if price not in side:
                        raise KeyError(f"delta deletes {price}, which the book does not hold")
                    del side[price]
                else:
                    side[price] = size
        self.u = data["u"]

    def levels(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.items(), key=lambda level: Decimal(level[0]), reverse=True)
        asks = sorted(self.asks.items(), key=lambda level: Decimal(level[0]))
        return [list(level) for level in bids], [list(level) for level in asks]

    def crossed(self) -> bool:
        if not self.bids or not self.asks:
            return False
        return max(Decimal(price) for price in self.bids) >= min(Decimal(price) for price in self.asks)
