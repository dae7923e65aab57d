"""Order-book state for one `orderbook.{depth}.{symbol}` topic (PROTOCOL.md §6.2 and §7.3).

Sans-I/O: no socket, no clock, no logging. Messages go in, an outcome comes out, and the caller decides what
to publish, count, log or resubscribe.

Invariants of `OrderBook`:
- It is publishable (`is_valid`) only after a snapshot (or a `u == 1` restart), and only while every
  delta since then had `u == last_u + 1` and left the book uncrossed (best bid < best ask).
- Once invalid it holds no levels and drops every delta until a snapshot or a `u == 1` message arrives.
- Prices and sizes are the exchange's decimal strings, kept exactly as last received for that price.
  Prices are ordered and compared numerically (`Decimal`): "100.0" and "100" are one level, and the
  string of the later message wins.
- No float ever touches a price or a size.

Checksum (v1) of the top N levels (also `book_checksum`):
1. Take at most N bids, best first (highest price first), and at most N asks, best first (lowest first).
2. For i = 0, 1, ..., N-1: if bid i exists, append its price then its size; then, if ask i exists, append
   its price then its size. When one side runs out, the other side continues alone.
3. Join the appended strings with ":" (no separator before the first or after the last). Prices and sizes
   are the exchange's decimal strings exactly as received for that level ("28555.20", never "28555.2").
4. The checksum is the CRC-32 of that string's ASCII bytes as zlib's `crc32` computes it (CRC-32/ISO-HDLC,
   the zlib/PNG/Ethernet CRC: reflected polynomial 0xEDB88320, initial value and final XOR 0xFFFFFFFF;
   "123456789" gives 0xCBF43926), as an unsigned 32-bit integer (0 to 4294967295).
   An empty book gives the empty string and checksum 0.
Example: bids [("100.5", "2"), ("100", "1")] and asks [("101", "3")] with N = 25 give the string
"100.5:2:101:3:100:1", whose checksum is 4130375076.

Levels beyond `depth`: a side may hold more than `depth` levels after a delta. We keep them and do not trim
(pybit does not trim either, and how Bybit evicts levels that leave the top-N window is unconfirmed, §7.3 rule
5); `top(n)` and `checksum(n)` read only the best n.

Over 400 lines on purpose: the book's invariants below are checked across every method, and splitting the
state machine from its level store would put one invariant in two files.
"""

from __future__ import annotations

import enum
import zlib
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

import msgspec

__all__ = [
    "BOOK_DATA",
    "BOOK_PUSH",
    "BookCounters",
    "BookData",
    "BookLevel",
    "BookOutcome",
    "BookOutcomeKind",
    "BookPush",
    "BookState",
    "InvalidCause",
    "Level",
    "OrderBook",
    "book_checksum",
]

Level = tuple[str, str]
"""One published level: (price, size), both the exchange's decimal strings."""


class BookLevel(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """`[price, size]`, or `[price, nonRpiSize, rpiSize]` on `orderbook.rpi.*` (§6.6)."""

    price: str
    size: str
    rpi_size: str | None = None


class BookData(msgspec.Struct, frozen=True, kw_only=True):
    """The `data` object of an order-book push; Bybit's one-letter keys stop here."""

    symbol: str = msgspec.field(name="s")
    bids: list[BookLevel] = msgspec.field(name="b", default_factory=list)
    asks: list[BookLevel] = msgspec.field(name="a", default_factory=list)
    update_id: int = msgspec.field(name="u")
    seq: int | None = None  # absent on 2023 option captures (§6.2)


class BookPush(msgspec.Struct, frozen=True, kw_only=True):
    """A whole order-book push frame, for callers that decode the frame here."""

    topic: str
    kind: Literal["snapshot", "delta"] = msgspec.field(name="type")
    ts: int | None = None
    cts: int | None = None
    data: BookData


# strict=False: §11 says `ts` may arrive as a numeric string; accept "123" where an int is expected.
BOOK_PUSH = msgspec.json.Decoder(BookPush, strict=False)
BOOK_DATA = msgspec.json.Decoder(BookData, strict=False)


class BookState(enum.StrEnum):
    WAITING_SNAPSHOT = "waiting_snapshot"
    LIVE = "live"


class InvalidCause(enum.StrEnum):
    GAP = "gap"
    DELTA_BEFORE_SNAPSHOT = "delta_before_snapshot"
    CROSSED = "crossed"
    RECONNECT = "reconnect"
    MALFORMED = "malformed"  # undecodable data, or a price/size not a finite non-negative ASCII decimal


class BookOutcomeKind(enum.StrEnum):
    SNAPSHOT = "snapshot"  # book replaced (also a `u == 1` restart); publish it
    DELTA = "delta"  # delta applied; publish it
    HEARTBEAT = "heartbeat"  # level-1 repeat with the same `u` and the same levels; book unchanged
    STALE = "stale"  # delta with `u <= last_u`: dropped, book still valid
    SEQ_BACKWARDS = "seq_backwards"  # delta with `seq < last_seq`: dropped, book still valid
    INVALIDATED = "invalidated"  # the book has just become invalid: publish book_invalid, resubscribe
    STILL_INVALID = "still_invalid"  # the book was already invalid: message dropped, nothing to do


class BookOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one `apply` (or `reset`) did to the book."""

    kind: BookOutcomeKind
    cause: InvalidCause | None = None  # set for INVALIDATED and STILL_INVALID (None: never had a snapshot)
    update_id: int | None = None  # the message's `u`
    restart: bool = False  # the snapshot came from a `u == 1` message (§7.1)
    gap_ignored: bool = False  # a delta applied across a jump in `u` (the gap check is off)

    @property
    def publishable(self) -> bool:
        return self.kind is BookOutcomeKind.SNAPSHOT or self.kind is BookOutcomeKind.DELTA

    @property
    def just_invalidated(self) -> bool:
        return self.kind is BookOutcomeKind.INVALIDATED


@dataclass(slots=True)
class BookCounters:
    """Per-book counts: one per outcome kind, and one per invalidation cause."""

    snapshots: int = 0
    restarts: int = 0
    deltas: int = 0
    heartbeats: int = 0
    stale: int = 0
    seq_backwards: int = 0
    still_invalid: int = 0
    gap: int = 0
    delta_before_snapshot: int = 0
    crossed: int = 0
    reconnect: int = 0
    malformed: int = 0
    gap_ignored: int = 0  # deltas applied across a jump in `u` because the gap check is off


class _Malformed(Exception):
    pass


_ZERO = Decimal(0)


def _parse(levels: list[BookLevel]) -> list[tuple[Decimal, str, str | None]]:
    """(price key, price, size or None for a delete), validated before anything is mutated.

    A price or size must be a finite, non-negative decimal in ASCII (so the checksum can encode it).
    Any zero size deletes ("0", "0.000"). Inlined: this runs for every level of every delta.
    """
    parsed: list[tuple[Decimal, str, str | None]] = []
    for level in levels:
        price, size = level.price, level.size
        try:
            key = Decimal(price)
            amount = _ZERO if size == "0" else Decimal(size)
        except InvalidOperation:
            raise _Malformed(level) from None
        if (
            not (key.is_finite() and amount.is_finite())
            or key.is_signed()
            or amount.is_signed()
            or not (price.isascii() and size.isascii())
        ):
            raise _Malformed(level)
        parsed.append((key, price, size if amount else None))
    return parsed


class _Side:
    """One side of the book: prices sorted ascending (both sides), and each level's `price:size` text beside its price.

    A level is kept as the one string the checksum reads ("28555.20:1.5"), in a list aligned with the sorted
    prices: the checksum of every published delta is then a slice and a join, with no lookup per level (a
    `Decimal` is hashed afresh on every dict lookup), and a level costs one object instead of three. `top`
    splits the few levels it returns.
    """

    __slots__ = ("keys", "texts")

    def __init__(self, keys: list[Decimal] | None = None, texts: list[str] | None = None) -> None:
        self.keys: list[Decimal] = keys if keys is not None else []
        self.texts: list[str] = texts if texts is not None else []

    @classmethod
    def from_snapshot(cls, parsed: list[tuple[Decimal, str, str | None]]) -> _Side:
        # A price listed twice keeps its last level, as a delta would.
        levels = {key: f"{price}:{size}" for key, price, size in parsed if size is not None}
        keys = sorted(levels)
        return cls(keys, [levels[key] for key in keys])

    def update(self, parsed: list[tuple[Decimal, str, str | None]]) -> None:
        keys, texts = self.keys, self.texts
        for key, price, size in parsed:
            i = bisect_left(keys, key)
            present = i < len(keys) and keys[i] == key
            if size is None:
                if present:
                    del keys[i]
                    del texts[i]
            elif present:
                texts[i] = f"{price}:{size}"
            else:
                keys.insert(i, key)
                texts.insert(i, f"{price}:{size}")

    def same_levels(self, other: _Side) -> bool:
        return self.keys == other.keys and self.texts == other.texts

    def best_texts(self, n: int, *, highest: bool) -> list[str]:
        """The texts of the best n levels, best first (highest first for bids)."""
        return self.texts[: -n - 1 : -1] if highest else self.texts[:n]

    def touches_top(self, parsed: list[tuple[Decimal, str, str | None]], n: int, *, highest: bool) -> bool:
        """Whether applying `parsed` may change the best n levels (read before the update).

        A change behind the n-th best price (an insert, delete or new size there) leaves the best n as they are;
        one at or ahead of it may not. With fewer than n levels every level is in the best n.
        """
        keys = self.keys
        if len(keys) < n or not parsed:
            return bool(parsed)
        if highest:
            floor = keys[-n]
            return any(key >= floor for key, _, _ in parsed)
        floor = keys[n - 1]
        return any(key <= floor for key, _, _ in parsed)


def _pairs(texts: list[str]) -> list[Level]:
    """`price:size` texts as (price, size) pairs: one split of the joined texts, paired in C."""
    if not texts:
        return []
    parts = iter(":".join(texts).split(":"))
    return list(zip(parts, parts, strict=False))


class OrderBook:
    """The book of one topic on one connection, maintained by PROTOCOL.md §7.3."""

    def __init__(self, topic: str, depth: int | None, *, gap_check: bool = True) -> None:
        self.topic = topic
        self.depth = depth  # None: unknown depth (never level-1 rules)
        # Bybit documents consecutive `u` only for orderbook.full (full-ob.mdx); for depth books the rule rests on
        # captures (§7.2). Off, a jump in `u` is applied and counted (`gap_ignored`) instead of resyncing.
        self.gap_check = gap_check
        self.counters = BookCounters()
        self.last_ts: int | None = None
        self.last_cts: int | None = None
        self._bids = _Side()
        self._asks = _Side()
        self._last_u: int | None = None
        self._last_seq: int | None = None
        self._state = BookState.WAITING_SNAPSHOT
        self._cause: InvalidCause | None = None
        # (n, checksum of the best n levels) until an update may change the best n: a delta wholly behind the
        # n-th level (common in a 50-level book checksummed over 25) reuses it.
        self._checksum: tuple[int, int] | None = None

    @classmethod
    def from_topic(cls, topic: str, *, gap_check: bool = True) -> OrderBook:
        """`orderbook.{depth}.{symbol}` or `orderbook.rpi.{symbol}` (depth 50). ValueError for anything else."""
        parts = topic.split(".", 2)
        if len(parts) != 3 or parts[0] != "orderbook":
            raise ValueError(f"not an order-book topic: {topic!r}")
        if parts[1] == "rpi":
            return cls(topic, 50, gap_check=gap_check)
        if parts[1].isascii() and parts[1].isdigit():  # str.isdigit alone admits "²", which int() refuses
            return cls(topic, int(parts[1]), gap_check=gap_check)
        # orderbook.full.* is delta-only and needs the REST sync of §7.4, which this class does not do.
        raise ValueError(f"unsupported order-book topic: {topic!r}")

    # --- views -------------------------------------------------------------------------------------------

    @property
    def state(self) -> BookState:
        return self._state

    @property
    def is_valid(self) -> bool:
        return self._state is BookState.LIVE

    @property
    def invalid_cause(self) -> InvalidCause | None:
        """Why the book is not valid (None while valid, and before the first snapshot)."""
        return self._cause

    @property
    def last_update_id(self) -> int | None:
        return self._last_u

    @property
    def last_seq(self) -> int | None:
        return self._last_seq

    def best_bid(self) -> Level | None:
        best = _pairs(self._bids.best_texts(1, highest=True))
        return best[0] if best else None

    def best_ask(self) -> Level | None:
        best = _pairs(self._asks.best_texts(1, highest=False))
        return best[0] if best else None

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """Up to n best bids (highest first) and n best asks (lowest first); empty while invalid."""
        if n <= 0:
            return [], []
        return _pairs(self._bids.best_texts(n, highest=True)), _pairs(self._asks.best_texts(n, highest=False))

    def checksum(self, n: int = 25) -> int:
        """The v1 checksum of our top n levels (see `book_checksum`); the same value, computed from stored texts."""
        cached = self._checksum
        if cached is not None and cached[0] == n:
            return cached[1]
        if n < 0:
            raise ValueError("n must be >= 0")
        value = _checksum_of_texts(self._bids.best_texts(n, highest=True), self._asks.best_texts(n, highest=False))
        self._checksum = (n, value)
        return value

    # --- transitions -------------------------------------------------------------------------------------

    def apply(
        self,
        kind: str | None,
        data: BookData | msgspec.Raw,
        *,
        ts: int | None = None,
        cts: int | None = None,
    ) -> BookOutcome:
        """Apply one push (`kind` is the envelope's `type`) and say what happened. Never raises.

        A `type` other than snapshot or delta (or none) is MALFORMED: it may have been a delta we cannot
        apply, so the book is dropped until a fresh snapshot (PROTOCOL.md rule 20: never crash the reader).
        """
        if kind not in ("snapshot", "delta"):
            return self._enter_invalid(InvalidCause.MALFORMED, None, report=not self._resubscribing())
        if isinstance(data, msgspec.Raw):
            try:
                data = BOOK_DATA.decode(data)
            except msgspec.DecodeError:  # ValidationError included: we may have missed a delta
                return self._enter_invalid(InvalidCause.MALFORMED, None, report=not self._resubscribing())
        u = data.update_id
        # §7.1: u == 1 is a service restart, a snapshot whatever its label. Exception: 2023 option books
        # started at u == 0 (§6.2), where u == 1 is simply the next delta.
        restart = u == 1 and not (kind == "delta" and self._state is BookState.LIVE and self._last_u == 0)
        try:
            if kind == "snapshot" or restart:
                return self._snapshot(data, restart, ts, cts)
            return self._delta(data, ts, cts)
        except _Malformed:
            # Unreadable levels: a snapshot we cannot use, or a delta we cannot apply; either way resync.
            return self._enter_invalid(InvalidCause.MALFORMED, u, report=True)

    def reset(self) -> BookOutcome:
        """Reconnect: forget everything and wait for the snapshot of the new subscription (§7.3 rule 6).

        INVALIDATED if the book was valid (publish book_invalid), else STILL_INVALID; the caller resubscribes
        every topic after a reconnect anyway.
        """
        return self._enter_invalid(InvalidCause.RECONNECT, None, report=self._state is BookState.LIVE)

    def invalidate(self, cause: InvalidCause, update_id: int | None = None) -> BookOutcome:
        """Drop the book until the next snapshot, e.g. when a frame of this topic could not be decoded.

        INVALIDATED (resubscribe) unless the book is already invalid for a reason that made the caller
        resubscribe, in which case STILL_INVALID.
        """
        return self._enter_invalid(cause, update_id, report=not self._resubscribing())

    def _resubscribing(self) -> bool:
        """Invalid, and the caller was told so (it has resubscribed); not merely awaiting a first snapshot."""
        return self._state is not BookState.LIVE and self._cause not in (None, InvalidCause.RECONNECT)

    def _enter_invalid(self, cause: InvalidCause, update_id: int | None, *, report: bool) -> BookOutcome:
        self._bids = _Side()
        self._asks = _Side()
        self._checksum = None
        self._last_u = None
        self._last_seq = None
        self._state = BookState.WAITING_SNAPSHOT
        self._cause = cause
        setattr(self.counters, cause.value, getattr(self.counters, cause.value) + 1)
        kind = BookOutcomeKind.INVALIDATED if report else BookOutcomeKind.STILL_INVALID
        return BookOutcome(kind=kind, cause=cause, update_id=update_id)

    def _snapshot(self, data: BookData, restart: bool, ts: int | None, cts: int | None) -> BookOutcome:
        u = data.update_id
        bids = _Side.from_snapshot(_parse(data.bids))
        asks = _Side.from_snapshot(_parse(data.asks))
        # §7.1: level 1 re-pushes an unchanged snapshot every 3 s with the same u. Level-1 u is never
        # gap-checked: any snapshot replaces the book.
        if (
            self.depth == 1
            and self._state is BookState.LIVE
            and u == self._last_u
            and bids.same_levels(self._bids)
            and asks.same_levels(self._asks)
        ):
            self._last_seq = data.seq
            self.last_ts, self.last_cts = ts, cts
            self.counters.heartbeats += 1
            return BookOutcome(kind=BookOutcomeKind.HEARTBEAT, update_id=u)
        if bids.keys and asks.keys and bids.keys[-1] >= asks.keys[0]:
            # A crossed snapshot, even one answering our resubscribe, cannot be published: resync again.
            return self._enter_invalid(InvalidCause.CROSSED, u, report=True)
        self._bids, self._asks = bids, asks
        self._checksum = None
        self._last_u, self._last_seq = u, data.seq
        self._state, self._cause = BookState.LIVE, None
        self.last_ts, self.last_cts = ts, cts
        self.counters.snapshots += 1
        if restart:
            self.counters.restarts += 1
        return BookOutcome(kind=BookOutcomeKind.SNAPSHOT, update_id=u, restart=restart)

    def _delta(self, data: BookData, ts: int | None, cts: int | None) -> BookOutcome:
        u = data.update_id
        if self._state is not BookState.LIVE:
            if self._resubscribing():
                # Leftovers of the old subscription, or the new one has not sent its snapshot yet.
                self.counters.still_invalid += 1
                return BookOutcome(kind=BookOutcomeKind.STILL_INVALID, cause=self._cause, update_id=u)
            # §7.3 rule 3: deltas but no snapshot; only a resubscribe will bring one.
            return self._enter_invalid(InvalidCause.DELTA_BEFORE_SNAPSHOT, u, report=True)
        last_u = self._last_u
        assert last_u is not None  # LIVE always has one
        if u <= last_u:
            self.counters.stale += 1
            return BookOutcome(kind=BookOutcomeKind.STALE, update_id=u)
        jumped = u != last_u + 1
        if jumped and self.gap_check:
            # Checked before seq: a missing u means a missed delta, so the book is wrong whatever seq says.
            return self._enter_invalid(InvalidCause.GAP, u, report=True)
        seq = data.seq
        if seq is not None and self._last_seq is not None and seq < self._last_seq:
            self.counters.seq_backwards += 1
            return BookOutcome(kind=BookOutcomeKind.SEQ_BACKWARDS, update_id=u)
        bids, asks = _parse(data.bids), _parse(data.asks)  # both parsed before either side changes
        cached = self._checksum
        if cached is not None and (
            self._bids.touches_top(bids, cached[0], highest=True)
            or self._asks.touches_top(asks, cached[0], highest=False)
        ):
            self._checksum = None
        self._bids.update(bids)
        self._asks.update(asks)
        bid_keys, ask_keys = self._bids.keys, self._asks.keys
        if bid_keys and ask_keys and bid_keys[-1] >= ask_keys[0]:
            return self._enter_invalid(InvalidCause.CROSSED, u, report=True)
        self._last_u = u
        if seq is not None:
            self._last_seq = seq
        self.last_ts, self.last_cts = ts, cts
        self.counters.deltas += 1
        if jumped:
            self.counters.gap_ignored += 1
            return BookOutcome(kind=BookOutcomeKind.DELTA, update_id=u, gap_ignored=True)
        return BookOutcome(kind=BookOutcomeKind.DELTA, update_id=u)


def _checksum_of_texts(bids: list[str], asks: list[str]) -> int:
    """CRC-32 of `price:size` texts, best first, interleaved bid i then ask i; the longer side's rest follows."""
    # Slice assignment interleaves without a Python step per level: this runs for every published delta.
    common = min(len(bids), len(asks))
    parts = [""] * (2 * common)
    parts[0::2] = bids if len(bids) == common else bids[:common]
    parts[1::2] = asks if len(asks) == common else asks[:common]
    parts += bids[common:] if len(bids) > common else asks[common:]
    return zlib.crc32(":".join(parts).encode("ascii"))


def book_checksum(bids: Sequence[Level], asks: Sequence[Level], n: int = 25) -> int:
    """CRC-32 of up to n levels per side, interleaved `bid_price:bid_size:ask_price:ask_size:...`.

    `bids` best (highest) first and `asks` best (lowest) first, as (price, size) decimal strings exactly as
    the exchange sent them. For i = 0..n-1: bid i's price and size (if it exists), then ask i's price and size
    (if it exists); when one side runs out the other continues alone. The strings are joined with ":" and the
    checksum is zlib.crc32 of the ASCII bytes, an unsigned 32-bit integer. An empty book gives 0.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    return _checksum_of_texts([f"{p}:{s}" for p, s in bids[:n]], [f"{p}:{s}" for p, s in asks[:n]])
