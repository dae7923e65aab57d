"""The fake's order-book generator on its own (no socket): its book keeps its invariants through any mix
of regular messages and faults, and a client following PROTOCOL.md §7.3 always ends equal to it."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.fake_bybit import BOOK_FAULTS, BookStream, LocalBook, Samples
from tests.fake_bybit.books import HISTORY, PriceGrid
from tests.fake_bybit.market import price_grid
from tests.fake_bybit.topics import Category

SAMPLES = Samples()

BOOKS: list[tuple[Category, int]] = [
    ("linear", 50),
    ("spot", 1),
    ("inverse", 200),
    ("option", 25),
    ("spot", 1000),
]


@pytest.mark.parametrize(
    ("category", "tick", "price_places", "size_places"),
    [("linear", "0.10", 2, 3), ("spot", "0.01", 2, 6), ("inverse", "0.50", 2, 0), ("option", "5", 0, 2)],
)
def test_price_grid_is_read_off_the_recorded_book(
    category: Category, tick: str, price_places: int, size_places: int
) -> None:
    grid = price_grid(category, SAMPLES)
    assert grid.tick == Decimal(tick)
    assert (grid.price_places, grid.size_places) == (price_places, size_places)
    assert grid.best_bid < grid.best_ask


def test_grid_from_levels_finds_the_common_step() -> None:
    grid = PriceGrid.from_levels([["1940", "1"], ["1525", "2"]], [["2075", "1"], ["2495", "2"]])
    assert grid.tick == Decimal(5)


class ModelClient:
    """A client doing exactly what PROTOCOL.md §7.3 asks, resyncing from a fresh snapshot on trouble."""

    def __init__(self, stream: BookStream) -> None:
        self.stream = stream
        self.book = LocalBook()
        self.resyncs = 0

    def receive(self, message: dict[str, Any], now_ms: int) -> None:
        data = message["data"]
        last_u = self.book.u
        if message["type"] == "snapshot" or data["u"] == 1:
            if last_u is not None and data["u"] < last_u and data["u"] != 1:
                return  # an old level-1 snapshot
            self.book.apply(message)
        elif last_u is None or data["u"] <= last_u:
            return  # stale or duplicate (rule 4a)
        elif data["u"] > last_u + 1:
            self.resync(now_ms)  # gap (rule 4c)
            return
        else:
            self.book.apply(message)
        if self.book.crossed():
            self.resync(now_ms)  # sanity (rule 5)

    def resync(self, now_ms: int) -> None:
        self.resyncs += 1
        self.book = LocalBook()
        self.book.apply(self.stream.snapshot(now_ms))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    book=st.sampled_from(BOOKS),
    steps=st.lists(st.sampled_from(["next"] * 6 + list(BOOK_FAULTS)), max_size=60),
)
# Found on a clean clone: a stale fault right after a restart used to send u == 1, which means a restart.
@example(seed=0, book=("linear", 50), steps=["restart", "next", "stale"])
def test_any_mix_of_deltas_and_faults_leaves_a_protocol_client_equal_to_the_fake(
    seed: int, book: tuple[Category, int], steps: list[str]
) -> None:
    category, depth = book
    grid = price_grid(category, SAMPLES)
    stream = BookStream(
        topic=f"orderbook.{depth}.X",
        category=category,
        symbol="X",
        depth=depth,
        grid=grid,
        rng=random.Random(seed),
    )
    client = ModelClient(stream)
    now_ms = 1_700_000_000_000
    client.receive(stream.snapshot(now_ms), now_ms)
    last_ts = 0
    for step in steps:
        now_ms += 1
        if step == "empty" and stream.level1:
            continue
        message = stream.next(now_ms) if step == "next" else stream.fault(step, now_ms)  # type: ignore[arg-type]
        stream.check()
        assert message["ts"] > last_ts
        last_ts = message["ts"]
        client.receive(message, now_ms)
        if step in ("next", "snapshot", "empty") and not stream.level1:
            assert message["data"]["u"] == client.book.u
    assert client.book.levels() == stream.levels()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), book=st.sampled_from(BOOKS), count=st.integers(1, 80))
def test_regular_messages_increment_u_by_one_and_never_need_a_resync(
    seed: int, book: tuple[Category, int], count: int
) -> None:
    category, depth = book
    stream = BookStream(
        topic="t",
        category=category,
        symbol="X",
        depth=depth,
        grid=price_grid(category, SAMPLES),
        rng=random.Random(seed),
    )
    client = ModelClient(stream)
    client.receive(stream.snapshot(0), 0)
    first_u = stream.u
    for n in range(1, count + 1):
        message = stream.next(n)
        assert message["data"]["u"] == first_u + n
        client.receive(message, n)
    assert client.resyncs == 0
    assert client.book.levels() == stream.levels()
    bids, asks = stream.levels()
    assert len(bids) <= depth
    assert len(asks) <= depth


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    book=st.sampled_from(BOOKS),
    steps=st.lists(st.sampled_from(["next"] * 4 + list(BOOK_FAULTS)), max_size=40),
)
def test_the_fake_remembers_its_book_at_every_u_it_sent_so_a_checker_can_compare(
    seed: int, book: tuple[Category, int], steps: list[str]
) -> None:
    category, depth = book
    stream = BookStream(
        topic="t",
        category=category,
        symbol="X",
        depth=depth,
        grid=price_grid(category, SAMPLES),
        rng=random.Random(seed),
    )
    for step in steps:
        if step == "empty" and stream.level1:
            continue
        message = stream.next(0) if step == "next" else stream.fault(step, 0)  # type: ignore[arg-type]
        data = message["data"]
        remembered = stream.state_at(data["u"], data["seq"])
        if step in ("stale", "crossed"):
            # Never applied to the fake's book: a stale update names an old state, a crossed one the unchanged book.
            continue
        assert remembered is not None
        bids, asks = stream.levels()
        as_decimals = (
            tuple((Decimal(p), Decimal(s)) for p, s in bids),
            tuple((Decimal(p), Decimal(s)) for p, s in asks),
        )
        assert remembered == as_decimals


def test_the_fakes_book_history_is_bounded() -> None:
    stream = BookStream(
        topic="t", category="linear", symbol="X", depth=50, grid=price_grid("linear", SAMPLES), rng=random.Random(1)
    )
    first = (stream.u, stream.seq)
    for _ in range(HISTORY + 5):
        stream.next(0)
    assert stream.state_at(*first) is None
    assert stream.state_at(stream.u, stream.seq) is not None
