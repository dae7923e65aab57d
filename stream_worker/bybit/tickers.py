"""Ticker state for one `tickers.{symbol}` topic (PROTOCOL.md §6.3 and §8).

Sans-I/O: no socket, no clock, no logging; the caller passes `now` (monotonic seconds) when it wants the
"deltas but no snapshot" timer. Values are kept exactly as Bybit sent them (decimal strings, `""` for empty);
a JSON number that is not an integer is read as `Decimal`, never as a float.

Linear and inverse send a snapshot and then partial deltas: a delta overwrites every key it carries (even with
`""`), and absent keys keep their values. Spot and option send only complete snapshots, so every message
replaces the cache whatever its `type` says. A key being present in a delta does not mean its value changed
(§8.5): `TickerOutcome.changed` names only the keys whose value differs from before.

The ticker mapping in an outcome is never mutated afterwards (each message builds a new one), so the caller
may hold on to it, but must not mutate it either.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import msgspec

__all__ = ["TICKER_DATA", "Category", "TickerCache", "TickerCounters", "TickerOutcome", "TickerOutcomeKind"]

Category = Literal["spot", "linear", "inverse", "option"]

TICKER_DATA = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)

_EMPTY: frozenset[str] = frozenset()


class TickerOutcomeKind(enum.StrEnum):
    SNAPSHOT = "snapshot"  # cache replaced; publish `ticker`
    DELTA = "delta"  # delta merged; publish `ticker`
    DROPPED_BEFORE_SNAPSHOT = "dropped_before_snapshot"  # delta with nothing to merge into (§8.3)
    DROPPED_OUT_OF_ORDER = "dropped_out_of_order"  # delta whose `cs` is below the cached one (§8.6)
    DROPPED_MALFORMED = "dropped_malformed"  # `data` is not a JSON object; linear/inverse: cache dropped


class TickerOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one `apply` did: the full merged ticker to publish, or why nothing is publishable."""

    kind: TickerOutcomeKind
    ticker: Mapping[str, Any] | None = None  # the whole ticker after this message; None when dropped
    changed: frozenset[str] = _EMPTY  # keys whose value differs from before (added or removed keys too)
    cs: int | None = None
    ts: int | None = None
    # Resubscribe the topic: deltas keep coming with no snapshot for `snapshot_timeout` seconds, or a
    # linear/inverse message could not be read.
    resubscribe: bool = False

    @property
    def publishable(self) -> bool:
        return self.ticker is not None


@dataclass(slots=True)
class TickerCounters:
    snapshots: int = 0
    deltas: int = 0
    dropped_before_snapshot: int = 0
    dropped_out_of_order: int = 0
    malformed: int = 0
    resubscribe_requests: int = 0


class TickerCache:
    """The latest full ticker of one topic on one connection."""

    def __init__(self, topic: str, category: Category, *, snapshot_timeout: float = 3.0) -> None:
        self.topic = topic
        self.category = category
        self.snapshot_timeout = snapshot_timeout
        self.counters = TickerCounters()
        self._merges = category in ("linear", "inverse")  # §6.3: spot and option are snapshot-only
        self._ticker: dict[str, Any] | None = None
        self._cs: int | None = None
        self._ts: int | None = None
        self._waiting_since: float | None = None  # first delta dropped for want of a snapshot

    @property
    def ticker(self) -> Mapping[str, Any] | None:
        return self._ticker

    @property
    def is_live(self) -> bool:
        return self._ticker is not None

    @property
    def cs(self) -> int | None:
        return self._cs

    @property
    def ts(self) -> int | None:
        return self._ts

    def reset(self) -> None:
        """Reconnect: drop the cache; the resubscribe brings a new snapshot (§8.8)."""
        self._ticker = None
        self._cs = None
        self._ts = None
        self._waiting_since = None

    def apply(
        self,
        kind: str | None,
        data: Mapping[str, Any] | msgspec.Raw,
        cs: int | None = None,
        ts: int | None = None,
        *,
        now: float | None = None,
    ) -> TickerOutcome:
        """Apply one push (`kind` is the envelope's `type`; `cs`, `ts` from the envelope). Never raises.

        A `type` other than snapshot or delta (or none) is DROPPED_MALFORMED, like unreadable data.
        """
        if kind not in ("snapshot", "delta"):
            return self.invalidate(cs, ts)
        if isinstance(data, msgspec.Raw):
            try:
                fields: Mapping[str, Any] = TICKER_DATA.decode(data)
            except msgspec.DecodeError:
                return self.invalidate(cs, ts)
        else:
            fields = data
        old = self._ticker
        if kind == "snapshot" or not self._merges:
            # A snapshot replaces the cache whatever its cs: it is complete, and a cs that went backwards
            # (e.g. an exchange restart) must not wedge a snapshot-only topic.
            new = dict(fields)
            changed = _diff(old, new)
            self.counters.snapshots += 1
            return self._store(TickerOutcomeKind.SNAPSHOT, new, changed, cs, ts)
        if old is None:
            return self._dropped_before_snapshot(cs, ts, now)
        if cs is not None and self._cs is not None and cs < self._cs:
            self.counters.dropped_out_of_order += 1
            return TickerOutcome(kind=TickerOutcomeKind.DROPPED_OUT_OF_ORDER, cs=cs, ts=ts)
        missing = _MISSING
        changed_keys = [key for key, value in fields.items() if old.get(key, missing) != value]
        if changed_keys:
            new = old.copy()
            new.update(fields)
        else:
            new = old  # nothing changed: keep the same (never mutated) mapping
        self.counters.deltas += 1
        return self._store(TickerOutcomeKind.DELTA, new, frozenset(changed_keys), cs, ts)

    def _store(
        self,
        kind: TickerOutcomeKind,
        ticker: dict[str, Any],
        changed: frozenset[str],
        cs: int | None,
        ts: int | None,
    ) -> TickerOutcome:
        self._ticker = ticker
        self._waiting_since = None
        if cs is not None:
            self._cs = cs
        if ts is not None:
            self._ts = ts
        return TickerOutcome(kind=kind, ticker=ticker, changed=changed, cs=cs, ts=ts)

    def invalidate(self, cs: int | None = None, ts: int | None = None) -> TickerOutcome:
        """A message of this topic could not be read. Linear/inverse: drop the cache and ask for a resubscribe,
        since it may have been a delta we can never merge now; spot/option: the next snapshot replaces it."""
        self.counters.malformed += 1
        if not self._merges:
            return TickerOutcome(kind=TickerOutcomeKind.DROPPED_MALFORMED, cs=cs, ts=ts)
        # It may have been a delta we can never merge now: forget the ticker and fetch a new snapshot.
        self.reset()
        self.counters.resubscribe_requests += 1
        return TickerOutcome(kind=TickerOutcomeKind.DROPPED_MALFORMED, cs=cs, ts=ts, resubscribe=True)

    def _dropped_before_snapshot(self, cs: int | None, ts: int | None, now: float | None) -> TickerOutcome:
        self.counters.dropped_before_snapshot += 1
        resubscribe = False
        if now is not None:
            if self._waiting_since is None:
                self._waiting_since = now
            elif now - self._waiting_since >= self.snapshot_timeout:
                resubscribe = True
                self._waiting_since = now  # ask again only after another full timeout
                self.counters.resubscribe_requests += 1
        return TickerOutcome(kind=TickerOutcomeKind.DROPPED_BEFORE_SNAPSHOT, cs=cs, ts=ts, resubscribe=resubscribe)


class _Missing:
    __slots__ = ()


_MISSING: Any = _Missing()


def _diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> frozenset[str]:
    if old is None:
        return frozenset(new)
    try:
        # The (key, value) pairs in one ticker and not the other name every changed, added and removed key; set
        # arithmetic in C, for the snapshot every spot ticker push is (half the cost of comparing key by key).
        return frozenset(dict(new.items() ^ old.items()))
    except TypeError:  # a value that cannot be hashed (a list where Bybit sends scalars): compare one by one
        pass
    changed = {key for key, value in new.items() if old.get(key, _MISSING) != value}
    changed.update(key for key in old if key not in new)
    return frozenset(changed)
