"""Which acknowledged public topics have gone silent: acked, yet no push for longer than their channel allows.

Bybit may acknowledge a topic that then never pushes (a symbol that exists nowhere, AUDIT B8), and a live
topic can stop pushing while the socket stays up. A subscription that is "active" and delivers nothing is the
worst kind of failure for a consumer, so each public channel has a threshold (settings; 0 switches a channel
off): past it the topic is stale until its next push. Private channels are exempt: silence is normal there.
Pure: the time comes in, verdicts come out; the dispatcher resubscribes and reports.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from shared.enums import Endpoint

# Bybit topic roots to the settings' channel names.
CHANNEL_OF_ROOT: Mapping[str, str] = {
    "orderbook": "orderbook",
    "tickers": "ticker",
    "kline": "kline",
    "publicTrade": "trades",
    "allLiquidation": "liquidation",
}
TopicKey = tuple[Endpoint, str]


class SilenceWatch:
    def __init__(self, thresholds: Mapping[str, float]) -> None:
        """`thresholds`: seconds per channel name (`orderbook`, `ticker`, ...); a channel missing or 0 is exempt."""
        self._thresholds = {channel: seconds for channel, seconds in thresholds.items() if seconds > 0}
        self._last: dict[TopicKey, float] = {}  # the latest push or ack, monotonic seconds
        self.stale: dict[TopicKey, float] = {}  # since when (monotonic) a topic has been reported stale

    def heard(self, key: TopicKey, now: float) -> bool:
        """A push arrived; True if the topic was stale until now."""
        self._last[key] = now
        return bool(self.stale) and self.stale.pop(key, None) is not None

    def acked(self, key: TopicKey, now: float) -> None:
        """Bybit acknowledged the topic (again): its silence is counted from here."""
        self._last[key] = now

    def forget(self, key: TopicKey) -> bool:
        """The topic is no longer held; True if it was stale."""
        self._last.pop(key, None)
        return self.stale.pop(key, None) is not None

    def threshold(self, topic: str) -> float | None:
        return self._thresholds.get(CHANNEL_OF_ROOT.get(topic.partition(".")[0], ""))

    def check(self, subscribed: Mapping[Endpoint, Collection[str]], now: float) -> list[TopicKey]:
        """Topics that became stale since the last check (each is reported once per silence)."""
        held = {(endpoint, topic) for endpoint, topics in subscribed.items() for topic in topics}
        for key in [key for key in self.stale if key not in held]:
            del self.stale[key]  # no longer held here (unsubscribed, reconnecting): its next ack clears its rows
        found: list[TopicKey] = []
        for endpoint, topics in subscribed.items():
            if endpoint is Endpoint.PRIVATE:
                continue
            for topic in topics:
                key = (endpoint, topic)
                limit = self.threshold(topic)
                if limit is None or key in self.stale:
                    continue
                last = self._last.setdefault(key, now)
                if now - last > limit:
                    self.stale[key] = now
                    found.append(key)
        return found
