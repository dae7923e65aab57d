"""Hypothesis strategies shared by the tests.

Order-book streams: what Bybit would push on one `orderbook.{depth}.{symbol}` topic, valid most of the time,
with faults injected at random points (gaps, stale and duplicate `u`, `u == 1` restarts, backwards `seq`,
crossing levels, malformed levels, deltas before any snapshot, reconnect resets). Generation is deliberately
sloppy about which rule a message ends up exercising: the tests judge every message with a reference book.

Ticker streams: snapshots and partial deltas over a small key pool, with `""` values, repeated unchanged
values, `cs` going backwards, deltas before a snapshot and resets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

# Bids live on ticks 1..40 and asks on 41..80 (a tick is 0.5), so only an injected level can cross the book.
BID_TICKS = (1, 40)
ASK_TICKS = (41, 80)
SIZES = ("0.001", "1", "1.0", "2.25", "10", "0.5")

Wire = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class BookMessage:
    kind: str  # "snapshot" | "delta"
    update_id: int
    seq: int | None
    bids: Wire
    asks: Wire
    fault: str  # which generator step made it: "delta", "gap", "restart", ... (for hypothesis.event)

    def as_data(self, symbol: str = "BTCUSDT") -> dict[str, Any]:
        """The push's `data` object, with Bybit's keys."""
        data: dict[str, Any] = {
            "s": symbol,
            "b": [list(level) for level in self.bids],
            "a": [list(level) for level in self.asks],
            "u": self.update_id,
        }
        if self.seq is not None:
            data["seq"] = self.seq
        return data


@dataclass(frozen=True)
class Reset:
    """The connection dropped: the book is reset (§7.3 rule 6)."""


BookStep = BookMessage | Reset


def _price(tick: int, variant: int) -> str:
    """A price on the half-tick grid, written one of several equivalent ways ("100", "100.0", "100.00")."""
    whole, half = divmod(tick, 2)
    return (
        (f"{whole}.5", f"{whole}.50", f"{whole}.5")[variant]
        if half
        else (f"{whole}", f"{whole}.0", f"{whole}.00")[variant]
    )


@functools.cache  # building strategies is costly in Hypothesis: build each one once
def levels(lo: int, hi: int, max_size: int, *, deletes: bool) -> st.SearchStrategy[Wire]:
    """Up to max_size levels priced on ticks lo..hi; with `deletes`, some sizes are zero ("0", "0.000")."""
    sizes = (*SIZES, "0", "0", "0.000") if deletes else SIZES

    # One integer per level (tick, spelling, size) keeps generation fast and still shrinks well.
    def decode(code: int) -> tuple[str, str]:
        code, size = divmod(code, len(sizes))
        tick, variant = divmod(code, 3)
        return _price(lo + tick, variant), sizes[size]

    codes = st.integers(0, (hi - lo + 1) * 3 * len(sizes) - 1)
    return st.lists(codes.map(decode), max_size=max_size).map(tuple)


MALFORMED_LEVELS: st.SearchStrategy[Wire] = st.sampled_from(
    [(("abc", "1"),), (("-1", "1"),), (("NaN", "1"),), (("10", "-2"),), (("10", "Infinity"),)]
)

_FIRST_U = st.sampled_from((0, 1, 2, 100, 20683568))
_KINDS = st.sampled_from(("snapshot", "delta"))
_LEVEL1_ACTIONS = st.sampled_from(("snapshot", "repeat", "delta"))
_LEVEL1_U_STEP = st.sampled_from((1, 1, 7, -3))  # level-1 snapshots are never gap-checked
_BOOK_ACTIONS = st.sampled_from(
    ("delta",) * 10
    + ("snapshot",) * 2
    + ("gap", "stale", "restart", "seq_back", "crossed", "malformed", "reset", "repeat")
)


@st.composite
def book_streams(draw: st.DrawFn, depth: int = 50, max_steps: int = 30) -> list[BookStep]:
    """A stream of order-book messages and resets for one topic at `depth` (1 means snapshot-only)."""
    has_seq = draw(st.booleans())
    u = draw(_FIRST_U)
    seq = draw(st.integers(0, 10**6))
    snapshot_size = 1 if depth == 1 else 8
    steps: list[BookStep] = []
    last: BookMessage | None = None

    def message(kind: str, bids: Wire, asks: Wire, fault: str, *, at_seq: int | None = None) -> BookMessage:
        return BookMessage(kind, u, (seq if at_seq is None else at_seq) if has_seq else None, bids, asks, fault)

    def snapshot_levels() -> tuple[Wire, Wire]:
        return (
            draw(levels(*BID_TICKS, snapshot_size, deletes=False)),
            draw(levels(*ASK_TICKS, snapshot_size, deletes=False)),
        )

    if draw(st.booleans()):  # usually the stream starts as Bybit starts it: with a snapshot
        last = message("snapshot", *snapshot_levels(), "snapshot")
        steps.append(last)
    for _ in range(draw(st.integers(0, max_steps))):
        action = draw(_BOOK_ACTIONS)
        if depth == 1 and action == "delta":
            action = draw(_LEVEL1_ACTIONS)
        if action == "reset":
            steps.append(Reset())
            continue
        if action == "repeat" and last is not None:
            steps.append(last)  # level 1's 3 s keep-alive; elsewhere a duplicate
            continue
        seq += draw(st.integers(0, 5))
        if action in ("snapshot", "repeat"):
            u += draw(_LEVEL1_U_STEP) if depth == 1 else draw(st.integers(1, 1000))
            last = message("snapshot", *snapshot_levels(), action)
        elif action == "restart":
            u = 1
            kind = draw(_KINDS)
            last = message(kind, *snapshot_levels(), "restart")
        elif action == "stale":
            stale_u = u - draw(st.integers(0, 3))
            last = BookMessage("delta", stale_u, seq if has_seq else None, *_delta_levels(draw), "stale")
        elif action == "seq_back":
            u += 1
            last = message("delta", *_delta_levels(draw), "seq_back", at_seq=seq - draw(st.integers(1, 50)))
        elif action == "crossed":
            u += 1
            bids = draw(levels(*ASK_TICKS, 2, deletes=False))  # bids among the asks
            last = message("delta", bids, (), "crossed")
        elif action == "malformed":
            u += 1
            kind = draw(_KINDS)
            last = message(kind, draw(MALFORMED_LEVELS), (), "malformed")
        else:  # "delta" or "gap"
            u += 1 + (draw(st.integers(1, 5)) if action == "gap" else 0)
            last = message("delta", *_delta_levels(draw), action)
        steps.append(last)
    return steps


def _delta_levels(draw: st.DrawFn) -> tuple[Wire, Wire]:
    return (
        draw(levels(*BID_TICKS, 3, deletes=True)),
        draw(levels(*ASK_TICKS, 3, deletes=True)),
    )


# --- tickers ---

TICKER_KEYS = ("lastPrice", "markPrice", "bid1Price", "bid1Size", "fundingRate", "openInterest", "basis")
TICKER_VALUES = ("", "0", "1.5", "1.50", "28560.00", "0.0001", "449736676")


@dataclass(frozen=True)
class TickerMessage:
    kind: str  # "snapshot" | "delta"
    data: dict[str, str]
    cs: int | None


TickerStep = TickerMessage | Reset


_VALUES = st.sampled_from(TICKER_VALUES)
_SNAPSHOT_KEYS = st.lists(st.sampled_from(TICKER_KEYS), unique=True, min_size=3)
_DELTA_KEYS = st.lists(st.sampled_from(TICKER_KEYS), unique=True)
_TICKER_ACTIONS = st.sampled_from(("delta",) * 6 + ("snapshot", "backwards", "reset"))


@st.composite
def ticker_streams(draw: st.DrawFn, max_steps: int = 30) -> list[TickerStep]:
    """Snapshots (complete) and deltas (any subset of keys) with mostly increasing `cs`."""
    cs = draw(st.integers(0, 10**6))
    steps: list[TickerStep] = []
    for _ in range(draw(st.integers(1, max_steps))):
        action = draw(_TICKER_ACTIONS)
        if action == "reset":
            steps.append(Reset())
            continue
        cs += draw(st.integers(0, 3))
        if action == "snapshot":
            snapshot = {"symbol": "BTCUSD", **{key: draw(_VALUES) for key in draw(_SNAPSHOT_KEYS)}}
            steps.append(TickerMessage("snapshot", snapshot, cs))
            continue
        delta = {key: draw(_VALUES) for key in draw(_DELTA_KEYS)}
        at = cs - draw(st.integers(1, 5)) if action == "backwards" else cs
        steps.append(TickerMessage("delta", delta, None if draw(st.integers(0, 3)) == 0 else at))
    return steps
