"""The sans-I/O Bybit core without a socket: recorded frames in, events and frames out, time as numbers."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.enums import Endpoint
from stream_worker.bybit.events import (
    AckTimeout,
    Authenticated,
    AuthRejected,
    Dead,
    Event,
    Malformed,
    Pong,
    Push,
    Subscribed,
    SubscribeRejected,
    Unknown,
    Unsubscribed,
)
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.bybit.signing import Credentials
from tests.support.samples import SAMPLES

WALL_MS = 1_700_000_000_000
OPTION_TOPIC = "orderbook.100.BTC-6JAN23-18000-C"  # the topic in op_subscribe_success_option.json
LONG_TOPIC = "orderbook.50." + "X" * 40


def sample_text(name: str) -> str:
    return (SAMPLES / name).read_text()


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(sample_text(name))
    return loaded


def reshaped(name: str, **changes: Any) -> str:
    """A real sample with our own `req_id` (or another field) put in, the way Bybit echoes it."""
    return json.dumps(sample(name) | changes)


def public(endpoint: Endpoint = Endpoint.LINEAR, **options: Any) -> BybitProtocol:
    return BybitProtocol(endpoint=endpoint, **options)


def private(**options: Any) -> BybitProtocol:
    credentials = Credentials(api_key="test-key", api_secret="test-secret")
    return BybitProtocol(endpoint=Endpoint.PRIVATE, credentials=credentials, **options)


def sent(protocol: BybitProtocol) -> list[dict[str, Any]]:
    return [json.loads(frame) for frame in protocol.frames_to_send()]


def topics_of(frames: list[dict[str, Any]], op: str) -> list[str]:
    picked = [frame for frame in frames if frame["op"] == op]
    assert all(len(frame["args"]) == 1 for frame in picked), "one topic per request"
    return [frame["args"][0] for frame in picked]


def connected(protocol: BybitProtocol, now: float = 0.0) -> list[dict[str, Any]]:
    protocol.connection_made(now=now, wall_ms=WALL_MS)
    return sent(protocol)


def authenticated(now: float = 0.0) -> BybitProtocol:
    protocol = private()
    connected(protocol, now)
    assert protocol.receive(sample_text("op_auth_success.json"), now) == [Authenticated()]
    sent(protocol)
    return protocol


def ack(topic: str, op: str = "subscribe") -> str:
    """A linear-style ack echoing `req_id` (our req_id is the topic when it fits)."""
    if op == "subscribe":
        return reshaped("op_subscribe_success_linear.json", req_id=topic)
    return reshaped("op_unsubscribe_success.json", req_id=topic)


def subscribed(protocol: BybitProtocol, *topics: str, now: float = 0.0) -> None:
    for topic in topics:
        protocol.want(topic)
    for topic in topics_of(sent(protocol), "subscribe"):
        assert protocol.receive(ack(topic), now) == [Subscribed(topic=topic)]


# -- connect, auth and subscribe ordering ------------------------------------------------------------------


def test_public_connect_pings_early_then_subscribes_each_wanted_topic_once() -> None:
    protocol = public(Endpoint.OPTION)
    protocol.want("tickers.BTC-6JAN23-17500-C")
    protocol.want("publicTrade.BTC")
    assert protocol.frames_to_send() == []  # nothing goes out before there is a socket
    frames = connected(protocol)
    assert frames[0] == {"req_id": "1", "op": "ping"}
    assert topics_of(frames, "subscribe") == ["tickers.BTC-6JAN23-17500-C", "publicTrade.BTC"]
    assert [frame["req_id"] for frame in frames[1:]] == ["tickers.BTC-6JAN23-17500-C", "publicTrade.BTC"]


def test_topic_longer_than_36_characters_gets_a_short_req_id_that_still_matches() -> None:
    protocol = public()
    connected(protocol)
    protocol.want(LONG_TOPIC)
    (request,) = sent(protocol)
    assert request["args"] == [LONG_TOPIC]
    assert len(request["req_id"]) <= 36
    assert request["req_id"] != LONG_TOPIC
    assert protocol.receive(ack(request["req_id"]), 1.0) == [Subscribed(topic=LONG_TOPIC)]


def test_private_sends_auth_first_and_subscribes_only_after_the_auth_ack() -> None:
    protocol = private()
    protocol.want("order")
    frames = connected(protocol)
    assert [frame["op"] for frame in frames] == ["auth", "ping"]
    protocol.want("wallet")
    assert sent(protocol) == []
    assert not protocol.authenticated
    assert protocol.receive(sample_text("op_auth_success_req_id.json"), 1.0) == [Authenticated()]
    assert protocol.authenticated
    assert topics_of(sent(protocol), "subscribe") == ["order", "wallet"]


def test_private_all_in_one_and_category_topics_go_in_separate_requests() -> None:
    protocol = authenticated()
    protocol.want("order")
    protocol.want("order.linear")
    frames = sent(protocol)
    assert [frame["args"] for frame in frames] == [["order"], ["order.linear"]]


def test_auth_rejection_surfaces_reason_and_is_never_retried_on_the_same_socket() -> None:
    protocol = private()
    protocol.want("order")
    connected(protocol)
    assert protocol.receive(sample_text("op_auth_failure.json"), 1.0) == [
        AuthRejected(reason="Params Error", conn_id="cno3gd1qo29t7ommtc60-18fpo")
    ]
    protocol.want("wallet")
    protocol.tick(25.0)
    frames = sent(protocol)
    assert [frame["op"] for frame in frames] == ["ping"]
    assert not protocol.authenticated
    assert protocol.subscribed == frozenset()


def test_new_socket_after_auth_rejection_authenticates_again() -> None:
    protocol = private()
    connected(protocol)
    protocol.receive(sample_text("op_auth_failure_raw_log.json"), 1.0)
    protocol.connection_lost()
    frames = connected(protocol, now=5.0)
    assert frames[0]["op"] == "auth"


def test_auth_ack_on_a_public_socket_is_unknown() -> None:
    protocol = public()
    connected(protocol)
    (event,) = protocol.receive(sample_text("op_auth_success.json"), 1.0)
    assert isinstance(event, Unknown)
    assert event.kind == "unexpected_auth_ack"


# -- acks per endpoint ---------------------------------------------------------------------------------------


def test_spot_ack_echoing_req_id_marks_the_topic_subscribed() -> None:
    protocol = public(Endpoint.SPOT)
    connected(protocol)
    protocol.want("orderbook.50.BTCUSDT")
    sent(protocol)
    events = protocol.receive(reshaped("op_subscribe_success_spot.json", req_id="orderbook.50.BTCUSDT"), 1.0)
    assert events == [Subscribed(topic="orderbook.50.BTCUSDT")]
    assert protocol.subscribed == {"orderbook.50.BTCUSDT"}


def test_linear_ack_with_empty_req_id_settles_the_oldest_pending_subscribe() -> None:
    protocol = public()
    connected(protocol)
    protocol.want("tickers.BTCUSDT")
    protocol.want("tickers.ETHUSDT")
    assert protocol.receive(sample_text("op_subscribe_success_linear.json"), 1.0) == [
        Subscribed(topic="tickers.BTCUSDT")
    ]
    assert protocol.pending == {"tickers.ETHUSDT"}


def test_private_ack_without_req_id_settles_the_oldest_pending_subscribe() -> None:
    protocol = authenticated()
    protocol.want("order")
    assert protocol.receive(sample_text("op_subscribe_success_private.json"), 1.0) == [Subscribed(topic="order")]


def test_option_command_resp_success_marks_the_listed_topic_subscribed() -> None:
    protocol = public(Endpoint.OPTION)
    protocol.want(OPTION_TOPIC)
    protocol.want("publicTrade.BTC")
    connected(protocol)
    events = protocol.receive(sample_text("op_subscribe_success_option.json"), 1.0)
    assert events == [Subscribed(topic=OPTION_TOPIC)]
    assert protocol.pending == {"publicTrade.BTC"}


def test_option_command_resp_fail_topics_reject_the_topic() -> None:
    protocol = public(Endpoint.OPTION)
    protocol.want("publicTrade.NOPE")
    connected(protocol)
    failure = reshaped("op_subscribe_success_option.json", success=False, data={"failTopics": ["publicTrade.NOPE"]})
    (event,) = protocol.receive(failure, 1.0)
    assert isinstance(event, SubscribeRejected)
    assert event.topic == "publicTrade.NOPE"
    assert protocol.failed.keys() == {"publicTrade.NOPE"}


def test_option_command_resp_settles_an_unsubscribe() -> None:
    protocol = public(Endpoint.OPTION)
    protocol.want(OPTION_TOPIC)
    connected(protocol)
    protocol.receive(sample_text("op_subscribe_success_option.json"), 1.0)
    protocol.unwant(OPTION_TOPIC)
    assert topics_of(sent(protocol), "unsubscribe") == [OPTION_TOPIC]
    assert protocol.receive(sample_text("op_subscribe_success_option.json"), 2.0) == [Unsubscribed(topic=OPTION_TOPIC)]


def test_command_resp_for_a_topic_we_did_not_ask_for_is_unknown() -> None:
    protocol = public(Endpoint.OPTION)
    connected(protocol)
    (event,) = protocol.receive(sample_text("op_subscribe_success_option.json"), 1.0)
    assert isinstance(event, Unknown)
    assert event.kind == "unmatched_ack"


def test_command_resp_with_unreadable_data_is_malformed() -> None:
    protocol = public(Endpoint.OPTION)
    connected(protocol)
    (event,) = protocol.receive('{"type":"COMMAND_RESP","data":{"successTopics":"x"}}', 1.0)
    assert isinstance(event, Malformed)
    assert event.kind == "bad_command_resp"


def test_already_subscribed_rejection_counts_as_subscribed() -> None:
    topic = "allLiquidation.ORDERUSDT"
    protocol = public()
    connected(protocol)
    protocol.want(topic)
    events = protocol.receive(reshaped("op_subscribe_failure_already_subscribed.json", req_id=topic), 1.0)
    assert events == [Subscribed(topic=topic)]
    assert protocol.failed == {}


def test_ack_with_someone_elses_req_id_is_unknown_not_an_error() -> None:
    protocol = public()
    connected(protocol)
    protocol.want("allLiquidation.ORDERUSDT")
    (event,) = protocol.receive(sample_text("op_subscribe_failure_already_subscribed.json"), 1.0)
    assert isinstance(event, Unknown)
    assert event.kind == "unmatched_ack"
    assert protocol.pending == {"allLiquidation.ORDERUSDT"}


# -- rejection: reported verbatim, parked, retried only on request ------------------------------------------


def rejected(topic: str = "getOrderBook.1.BTCUSDT") -> BybitProtocol:
    protocol = public()
    connected(protocol)
    protocol.want(topic)
    sent(protocol)
    events = protocol.receive(reshaped("op_subscribe_failure.json", req_id=topic), 1.0)
    assert events == [
        SubscribeRejected(
            topic=topic,
            reason="error:handler not found,topic:getOrderBook.1.BTCUSDT",
            conn_id="958a35b7-c1fb-48e3-953f-997702f22f6e",
        )
    ]
    return protocol


def test_rejected_topic_is_parked_with_bybits_reason_and_not_retried() -> None:
    protocol = rejected()
    assert sent(protocol) == []
    assert protocol.failed == {"getOrderBook.1.BTCUSDT": "error:handler not found,topic:getOrderBook.1.BTCUSDT"}
    assert "getOrderBook.1.BTCUSDT" in protocol.wanted
    assert protocol.subscribed == frozenset()


def test_rejected_topic_is_not_retried_after_reconnect() -> None:
    protocol = rejected()
    protocol.connection_lost()
    assert topics_of(connected(protocol, now=5.0), "subscribe") == []
    assert "getOrderBook.1.BTCUSDT" in protocol.failed


def test_wanting_a_rejected_topic_again_does_not_retry_it() -> None:
    protocol = rejected()
    protocol.want("getOrderBook.1.BTCUSDT")
    assert sent(protocol) == []


def test_unwant_then_want_retries_a_rejected_topic() -> None:
    protocol = rejected()
    protocol.unwant("getOrderBook.1.BTCUSDT")
    assert sent(protocol) == []
    assert protocol.failed == {}
    protocol.want("getOrderBook.1.BTCUSDT")
    assert topics_of(sent(protocol), "subscribe") == ["getOrderBook.1.BTCUSDT"]


def test_resubscribe_retries_a_rejected_topic() -> None:
    protocol = rejected()
    protocol.resubscribe("getOrderBook.1.BTCUSDT")
    assert topics_of(sent(protocol), "subscribe") == ["getOrderBook.1.BTCUSDT"]
    assert protocol.failed == {}


def test_spot_rejection_without_req_id_settles_the_oldest_pending_subscribe() -> None:
    protocol = public(Endpoint.SPOT)
    connected(protocol)
    protocol.want("publicTrade.BTCUSDT")
    protocol.want("publicTrade.ETHUSDT")
    events = protocol.receive(sample_text("op_subscribe_failure_spot_args_size.json"), 1.0)
    assert events == [
        SubscribeRejected(
            topic="publicTrade.BTCUSDT", reason="args size >10", conn_id="0a555e6f-199c-49bb-9bb8-6f8adcd8b057"
        )
    ]


def test_conn_id_is_learned_from_the_first_reply_and_forgotten_with_the_socket() -> None:
    protocol = public()
    connected(protocol)
    assert protocol.conn_id is None
    protocol.receive(sample_text("op_pong_public_linear.json"), 1.0)
    first = protocol.conn_id
    assert first is not None
    protocol.receive(sample_text("op_subscribe_failure.json"), 2.0)  # another id later does not replace it
    assert protocol.conn_id == first
    protocol.connection_lost()
    assert protocol.conn_id is None


# -- desired state across acks and reconnects ----------------------------------------------------------------


def test_reconnect_resubscribes_each_wanted_topic_exactly_once() -> None:
    protocol = public()
    connected(protocol)
    subscribed(protocol, "tickers.BTCUSDT", "orderbook.50.BTCUSDT", "publicTrade.BTCUSDT")
    protocol.want("kline.5.BTCUSDT")  # still in flight when the socket drops
    protocol.connection_lost()
    assert protocol.subscribed == frozenset()
    assert protocol.pending == frozenset()
    assert protocol.wanted == {
        "tickers.BTCUSDT",
        "orderbook.50.BTCUSDT",
        "publicTrade.BTCUSDT",
        "kline.5.BTCUSDT",
    }
    frames = connected(protocol, now=3.0)
    assert sorted(topics_of(frames, "subscribe")) == sorted(protocol.wanted)
    assert topics_of(frames, "unsubscribe") == []


def test_frames_queued_for_a_lost_socket_are_never_sent_on_the_next() -> None:
    protocol = public()
    connected(protocol)
    protocol.want("tickers.BTCUSDT")
    protocol.connection_lost()
    assert protocol.frames_to_send() == []


def test_want_twice_or_while_in_flight_sends_one_subscribe() -> None:
    protocol = public()
    connected(protocol)
    protocol.want("tickers.BTCUSDT")
    protocol.want("tickers.BTCUSDT")
    assert topics_of(sent(protocol), "subscribe") == ["tickers.BTCUSDT"]
    protocol.unwant("tickers.BTCUSDT")
    protocol.want("tickers.BTCUSDT")
    assert sent(protocol) == []
    assert protocol.receive(ack("tickers.BTCUSDT"), 1.0) == [Subscribed(topic="tickers.BTCUSDT")]
    assert sent(protocol) == []


def test_unwant_during_pending_subscribe_ends_unsubscribed() -> None:
    protocol = public()
    connected(protocol)
    protocol.want("tickers.BTCUSDT")
    sent(protocol)
    protocol.unwant("tickers.BTCUSDT")
    assert sent(protocol) == []  # one op in flight per topic: the unsubscribe waits for the ack
    assert protocol.receive(ack("tickers.BTCUSDT"), 1.0) == [Subscribed(topic="tickers.BTCUSDT")]
    assert topics_of(sent(protocol), "unsubscribe") == ["tickers.BTCUSDT"]
    assert protocol.receive(ack("tickers.BTCUSDT", "unsubscribe"), 2.0) == [Unsubscribed(topic="tickers.BTCUSDT")]
    assert protocol.subscribed == frozenset()
    assert sent(protocol) == []


def test_unwant_during_pending_subscribe_that_is_then_rejected_parks_nothing() -> None:
    protocol = public()
    connected(protocol)
    protocol.want("getOrderBook.1.BTCUSDT")
    protocol.unwant("getOrderBook.1.BTCUSDT")
    (event,) = protocol.receive(reshaped("op_subscribe_failure.json", req_id="getOrderBook.1.BTCUSDT"), 1.0)
    assert isinstance(event, SubscribeRejected)
    assert protocol.failed == {}
    assert topics_of(sent(protocol), "unsubscribe") == []


def test_unwant_of_a_subscribed_topic_unsubscribes_it() -> None:
    protocol = public()
    connected(protocol)
    subscribed(protocol, "tickers.BTCUSDT")
    protocol.unwant("tickers.BTCUSDT")
    (request,) = sent(protocol)
    assert request == {"req_id": "tickers.BTCUSDT", "op": "unsubscribe", "args": ["tickers.BTCUSDT"]}


def test_failed_unsubscribe_means_not_subscribed_now() -> None:
    protocol = public()
    connected(protocol)
    subscribed(protocol, "tickers.BTCUSDT")
    protocol.unwant("tickers.BTCUSDT")
    failure = reshaped("op_unsubscribe_success.json", req_id="tickers.BTCUSDT", success=False, ret_msg="?")
    assert protocol.receive(failure, 1.0) == [Unsubscribed(topic="tickers.BTCUSDT")]
    assert protocol.subscribed == frozenset()


def test_resubscribe_unsubscribes_then_subscribes_the_topic() -> None:
    protocol = public()
    connected(protocol)
    subscribed(protocol, "orderbook.50.BTCUSDT")
    protocol.resubscribe("orderbook.50.BTCUSDT")
    assert topics_of(sent(protocol), "unsubscribe") == ["orderbook.50.BTCUSDT"]
    events = protocol.receive(ack("orderbook.50.BTCUSDT", "unsubscribe"), 1.0)
    assert events == [Unsubscribed(topic="orderbook.50.BTCUSDT")]
    assert topics_of(sent(protocol), "subscribe") == ["orderbook.50.BTCUSDT"]
    assert protocol.receive(ack("orderbook.50.BTCUSDT"), 2.0) == [Subscribed(topic="orderbook.50.BTCUSDT")]


def test_resubscribe_while_subscribe_in_flight_sends_nothing_more() -> None:
    protocol = public()
    connected(protocol)
    protocol.want("orderbook.50.BTCUSDT")
    sent(protocol)
    protocol.resubscribe("orderbook.50.BTCUSDT")
    protocol.resubscribe("not.wanted")
    assert sent(protocol) == []


# -- heartbeat, liveness and ack timeouts -----------------------------------------------------------------


def test_ping_is_due_every_interval_after_the_early_one() -> None:
    protocol = public(ping_interval=20.0)
    assert connected(protocol, now=100.0) == [{"req_id": "1", "op": "ping"}]
    assert protocol.tick(119.9) == []
    assert sent(protocol) == []
    protocol.tick(120.0)
    assert sent(protocol) == [{"req_id": "2", "op": "ping"}]
    protocol.receive(sample_text("op_pong_public_linear.json"), 121.0)
    protocol.tick(139.0)
    assert sent(protocol) == []
    protocol.tick(140.5)
    assert sent(protocol) == [{"req_id": "3", "op": "ping"}]


def test_no_pings_or_events_while_disconnected() -> None:
    protocol = public()
    assert protocol.tick(1_000.0) == []
    connected(protocol)
    protocol.connection_lost()
    assert protocol.tick(1_000.0) == []
    assert protocol.frames_to_send() == []


def test_dead_after_silence_is_reported_once() -> None:
    protocol = public(dead_after=40.0)
    connected(protocol, now=0.0)
    assert not any(isinstance(event, Dead) for event in protocol.tick(39.9))
    (event,) = protocol.tick(40.0)
    assert isinstance(event, Dead)
    assert protocol.tick(41.0) == []


def test_flowing_data_keeps_the_socket_alive() -> None:
    protocol = public(dead_after=40.0)
    connected(protocol)
    push = sample_text("public_tickers_linear.json")
    for second in range(0, 200, 5):
        protocol.receive(push, float(second))
        assert not any(isinstance(event, Dead) for event in protocol.tick(second + 4.9))
    assert protocol.last_received == 195.0


def test_any_frame_even_a_malformed_one_counts_as_liveness() -> None:
    protocol = public(dead_after=40.0)
    connected(protocol)
    protocol.receive("garbage", 30.0)
    assert not any(isinstance(event, Dead) for event in protocol.tick(60.0))


def test_unacked_subscribe_times_out_once_and_a_late_ack_still_counts() -> None:
    protocol = public(ack_timeout=10.0)
    protocol.want("tickers.BTCUSDT")
    connected(protocol, now=0.0)
    assert protocol.tick(9.9) == []
    assert protocol.tick(10.0) == [AckTimeout(op="subscribe", topics=("tickers.BTCUSDT",))]
    assert protocol.tick(15.0) == []
    assert protocol.pending == {"tickers.BTCUSDT"}
    assert protocol.receive(ack("tickers.BTCUSDT"), 16.0) == [Subscribed(topic="tickers.BTCUSDT")]


def test_op_queued_without_a_clock_is_timed_from_the_next_tick() -> None:
    protocol = public(ack_timeout=10.0)
    connected(protocol, now=0.0)
    protocol.tick(5.0)
    protocol.want("tickers.BTCUSDT")
    assert protocol.tick(6.0) == []  # stamps the op
    assert protocol.tick(15.9) == []
    assert protocol.tick(16.0) == [AckTimeout(op="subscribe", topics=("tickers.BTCUSDT",))]


def test_unacked_auth_times_out() -> None:
    protocol = private(ack_timeout=10.0)
    connected(protocol, now=0.0)
    assert protocol.tick(10.0) == [AckTimeout(op="auth", topics=())]
    assert protocol.tick(12.0) == []


# -- inbound frames of every kind ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*pong*.json")))
def test_every_pong_sample_is_a_pong(name: str) -> None:
    protocol = public()
    connected(protocol)
    assert protocol.receive(sample_text(name), 1.0) == [Pong()]


@pytest.mark.parametrize("text", ["pong", b"pong", "pong\n"])
def test_bare_pong_text_frame_is_a_pong(text: str | bytes) -> None:
    assert public().receive(text, 1.0) == [Pong()]


def test_push_carries_the_envelope_and_raw_data() -> None:
    protocol = public(Endpoint.OPTION)
    (event,) = protocol.receive(sample_text("public_orderbook_snapshot_option_2024.json").encode(), 7.5)
    assert isinstance(event, Push)
    assert event.topic == "orderbook.25.BTC-13SEP24-58500-P"
    assert event.type == "snapshot"
    assert (event.ts, event.cts) == (1725967410822, 1725967407642)
    assert event.id == "orderbook.25.BTC-13SEP24-58500-P-26718245417-1725967410822"
    assert event.received_at == 7.5
    assert msgspec.json.decode(event.data)["u"] == 19527


def test_private_push_carries_creation_time() -> None:
    (event,) = authenticated().receive(sample_text("private_wallet.json"), 3.0)
    assert isinstance(event, Push)
    assert event.topic == "wallet"
    assert event.creation_time == sample("private_wallet.json")["creationTime"]
    assert event.ts is None


def test_numeric_string_ts_is_read_as_milliseconds() -> None:
    (event,) = public().receive('{"topic":"tickers.BTCUSDT","ts":"1772694601512","data":{}}', 1.0)
    assert isinstance(event, Push)
    assert event.ts == 1772694601512


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("not json at all", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        ("[1, 2, 3]", "not_an_object"),
        ('{"topic": 42, "data": {}}', "bad_topic"),
        ('{"topic": "tickers.BTCUSDT", "ts": "yesterday", "data": {}}', "bad_ts"),
        ('{"topic": "tickers.BTCUSDT", "ts": 1.5, "data": {}}', "bad_ts"),
        ('{"op": "subscribe", "success": "true"}', "bad_success"),
    ],
)
def test_malformed_frames_become_events_not_exceptions(text: str | bytes, kind: str) -> None:
    protocol = public()
    connected(protocol)
    (event,) = protocol.receive(text, 1.0)
    assert isinstance(event, Malformed)
    assert event.kind == kind


def test_unclassifiable_and_order_entry_frames_are_unknown() -> None:
    protocol = public()
    assert protocol.receive('{"hello": "world"}', 1.0) == [Unknown(kind="unclassified", text='{"hello": "world"}')]
    (event,) = protocol.receive(sample_text("trade_order_create_response.json"), 1.0)
    assert isinstance(event, Unknown)
    assert event.kind == "order_entry"


ALL_SAMPLES = sorted(p.name for p in SAMPLES.glob("*.json"))


@pytest.mark.parametrize("name", ALL_SAMPLES)
def test_every_sample_is_received_without_raising(name: str) -> None:
    protocol = public()
    connected(protocol)
    events: list[Event] = protocol.receive(sample_text(name), 1.0)
    assert len(events) == 1
    topic = sample(name).get("topic")
    if topic is not None:
        assert isinstance(events[0], Push)
        assert events[0].topic == topic
    else:
        assert not isinstance(events[0], Push | Malformed)


def test_samples_directory_is_found() -> None:
    assert len(ALL_SAMPLES) > 50


# -- property: any interleaving converges without double subscribes ----------------------------------------


class FakeBybit:
    """One socket's worth of Bybit: records live topics, answers in order in the endpoint's own shapes."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.live: set[str] = set()
        self.replies: deque[str] = deque()
        self.authed = False
        self.violations: list[str] = []

    def new_socket(self) -> None:
        self.live.clear()
        self.replies.clear()
        self.authed = False

    def take(self, frames: list[str]) -> None:
        for text in frames:
            request = json.loads(text)
            op, req_id = request["op"], request["req_id"]
            if op == "ping":
                self.replies.append(self.pong(req_id))
            elif op == "auth":
                self.authed = True
                self.replies.append(reshaped("op_auth_success_req_id.json", req_id=req_id))
            else:
                (topic,) = request["args"]
                self.replies.append(self.answer(op, req_id, topic))

    def answer(self, op: str, req_id: str, topic: str) -> str:
        ok, why = True, ""
        if self.endpoint.private and not self.authed:
            self.violations.append(f"{op} {topic} before auth")
        if op == "subscribe":
            if topic in self.live:
                self.violations.append(f"duplicate subscribe {topic}")
                ok, why = False, f"error:already subscribed,topic:{topic}"
            elif topic.startswith("bad."):
                ok, why = False, f"error:handler not found,topic:{topic}"
            else:
                self.live.add(topic)
        else:
            ok = topic in self.live
            self.live.discard(topic)
        if self.endpoint is Endpoint.OPTION:
            result = {"successTopics": [topic] if ok else [], "failTopics": [] if ok else [topic]}
            return reshaped("op_subscribe_success_option.json", success=ok, data=result)
        if self.endpoint is Endpoint.SPOT:
            return reshaped("op_subscribe_success_spot.json", success=ok, ret_msg=why or op, req_id=req_id, op=op)
        if self.endpoint is Endpoint.PRIVATE:
            return reshaped("op_subscribe_success_private.json", success=ok, ret_msg=why, req_id=req_id, op=op)
        return reshaped("op_subscribe_success_linear.json", success=ok, ret_msg=why, req_id=req_id, op=op)

    def pong(self, req_id: str) -> str:
        if self.endpoint is Endpoint.OPTION:
            return sample_text("op_pong_public_option.json")
        if self.endpoint is Endpoint.SPOT:
            return sample_text("op_pong_public_spot.json")
        if self.endpoint is Endpoint.PRIVATE:
            return reshaped("op_pong_private.json", req_id=req_id)
        return reshaped("op_pong_public_linear_req_id.json", req_id=req_id)


PROPERTY_TOPICS = [
    "tickers.BTCUSDT",
    "orderbook.50.BTCUSDT",
    "order",
    "order.linear",
    LONG_TOPIC,
    "bad.topic",
]
STEPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["want", "unwant", "resubscribe"]), st.sampled_from(PROPERTY_TOPICS)),
        st.tuples(st.just("deliver"), st.integers(min_value=1, max_value=4)),
        st.tuples(st.sampled_from(["lose", "connect"]), st.just(0)),
    ),
    max_size=40,
)


def drive(protocol: BybitProtocol, server: FakeBybit) -> None:
    frames = protocol.frames_to_send()
    if not protocol.connected:
        assert frames == [], "frames queued with no socket"
    server.take(frames)


def deliver(protocol: BybitProtocol, server: FakeBybit, count: int, now: float) -> None:
    for _ in range(count):
        if not server.replies:
            return
        protocol.receive(server.replies.popleft(), now)
        drive(protocol, server)


@given(endpoint=st.sampled_from(list(Endpoint)), steps=STEPS, window=st.integers(min_value=1, max_value=4))
@settings(max_examples=300, deadline=None)
def test_any_interleaving_never_double_subscribes_and_converges_to_wanted(
    endpoint: Endpoint, steps: list[tuple[str, Any]], window: int
) -> None:
    protocol = private(window=window) if endpoint.private else public(endpoint, window=window)
    server = FakeBybit(endpoint)
    now = 0.0
    for action, argument in steps:
        now += 1.0
        if action == "want":
            protocol.want(argument)
        elif action == "unwant":
            protocol.unwant(argument)
        elif action == "resubscribe":
            protocol.resubscribe(argument)
        elif action == "deliver":
            deliver(protocol, server, argument, now)
        elif action == "lose":
            protocol.connection_lost()
            server.new_socket()
        elif not protocol.connected:
            server.new_socket()
            protocol.connection_made(now, WALL_MS)
        drive(protocol, server)
        assert server.violations == []
        assert len(protocol.pending) <= window
        assert protocol.failed.keys() <= protocol.wanted
        if protocol.connected:
            assert protocol.subscribed - protocol.pending <= server.live

    if not protocol.connected:
        server.new_socket()
        protocol.connection_made(now, WALL_MS)
        drive(protocol, server)
    deliver(protocol, server, 10_000, now + 1.0)

    rejected = {topic for topic in protocol.wanted if topic.startswith("bad.")}
    assert server.violations == []
    assert protocol.pending == frozenset()
    assert protocol.subscribed == protocol.wanted - rejected == server.live
    assert protocol.failed.keys() == rejected


# -- the subscribe window --------------------------------------------------------------------------------------


def test_a_reconnect_sends_no_more_than_the_window_and_each_ack_lets_one_more_out() -> None:
    protocol = public(window=3)
    topics = [f"tickers.SYM{i}USDT" for i in range(8)]
    for topic in topics:
        protocol.want(topic)
    first = topics_of(connected(protocol), "subscribe")
    assert first == topics[:3]
    assert protocol.queued == 5
    protocol.receive(ack(first[0]), 1.0)
    assert topics_of(sent(protocol), "subscribe") == [topics[3]]
    pending = [*first[1:], topics[3]]
    while pending:
        topic = pending.pop(0)
        protocol.receive(ack(topic), 2.0)
        pending += topics_of(sent(protocol), "subscribe")
    assert protocol.subscribed == frozenset(topics)
    assert protocol.queued == 0


def test_an_op_that_waited_for_the_window_starts_its_ack_clock_when_sent() -> None:
    protocol = public(window=1, ack_timeout=10.0)
    protocol.want("tickers.AUSDT")
    protocol.want("tickers.BUSDT")
    assert topics_of(connected(protocol, now=0.0), "subscribe") == ["tickers.AUSDT"]
    protocol.receive(ack("tickers.AUSDT"), 9.0)  # slow, but in time
    assert topics_of(sent(protocol), "subscribe") == ["tickers.BUSDT"]
    assert [e for e in protocol.tick(15.0) if isinstance(e, AckTimeout)] == []  # 6 s after it went out
    assert [e for e in protocol.tick(19.5) if isinstance(e, AckTimeout)] == [
        AckTimeout(op="subscribe", topics=("tickers.BUSDT",))
    ]


def test_a_topic_unwanted_while_it_waited_for_the_window_is_never_sent() -> None:
    protocol = public(window=1)
    protocol.want("tickers.AUSDT")
    protocol.want("tickers.BUSDT")
    connected(protocol)
    protocol.unwant("tickers.BUSDT")
    protocol.receive(ack("tickers.AUSDT"), 1.0)
    assert sent(protocol) == []
    assert protocol.queued == 0


def test_a_resubscribe_asked_while_the_window_is_full_happens_when_a_slot_frees() -> None:
    protocol = public(window=1)
    connected(protocol)
    subscribed(protocol, "tickers.AUSDT")
    protocol.want("tickers.BUSDT")
    assert topics_of(sent(protocol), "subscribe") == ["tickers.BUSDT"]
    protocol.resubscribe("tickers.AUSDT")
    assert sent(protocol) == []
    protocol.receive(ack("tickers.BUSDT"), 1.0)
    assert topics_of(sent(protocol), "unsubscribe") == ["tickers.AUSDT"]
    protocol.receive(ack("tickers.AUSDT", "unsubscribe"), 2.0)
    assert topics_of(sent(protocol), "subscribe") == ["tickers.AUSDT"]


def test_the_window_is_at_least_one_op() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        public(window=0)
