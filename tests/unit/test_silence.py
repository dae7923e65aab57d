"""The silence watch: an acknowledged public topic with no push past its channel's threshold is stale once."""

from __future__ import annotations

from shared.enums import Endpoint
from stream_worker.silence import SilenceWatch

BOOK, TRADES = "orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"
HELD = {Endpoint.LINEAR: {BOOK, TRADES}, Endpoint.PRIVATE: {"order"}}


def test_a_silent_book_is_reported_once_and_recovers_on_its_next_push() -> None:
    watch = SilenceWatch({"orderbook": 5.0, "trades": 0.0})
    watch.acked((Endpoint.LINEAR, BOOK), 0.0)
    assert watch.check(HELD, 4.0) == []
    assert watch.check(HELD, 6.0) == [(Endpoint.LINEAR, BOOK)]
    assert watch.check(HELD, 60.0) == []  # reported once per silence: one resubscribe attempt
    watch.acked((Endpoint.LINEAR, BOOK), 61.0)  # the resubscribe's ack does not make it live
    assert (Endpoint.LINEAR, BOOK) in watch.stale
    assert watch.heard((Endpoint.LINEAR, BOOK), 62.0) is True
    assert watch.heard((Endpoint.LINEAR, BOOK), 62.1) is False
    assert watch.check(HELD, 66.0) == []
    assert watch.check(HELD, 67.5) == [(Endpoint.LINEAR, BOOK)]  # a new silence is reported again


def test_exempt_channels_and_private_topics_are_never_stale() -> None:
    watch = SilenceWatch({"orderbook": 5.0, "trades": 0.0})
    watch.check(HELD, 0.0)
    watch.heard((Endpoint.LINEAR, BOOK), 1000.0)
    assert watch.check(HELD, 1001.0) == []
    assert watch.stale == {}


def test_a_topic_no_longer_held_stops_being_stale() -> None:
    watch = SilenceWatch({"orderbook": 5.0})
    watch.acked((Endpoint.LINEAR, BOOK), 0.0)
    assert watch.check(HELD, 10.0) == [(Endpoint.LINEAR, BOOK)]
    watch.check({Endpoint.LINEAR: set()}, 11.0)
    assert watch.stale == {}
