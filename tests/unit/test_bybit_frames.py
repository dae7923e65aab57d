"""The tolerant inbound frame view, its §2 classification, and the outbound op encodings."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from stream_worker.bybit.frames import (
    FRAMES,
    NO_DATA,
    Control,
    classify_control,
    describe_decode_error,
    encode_op,
    encode_ping,
    excerpt,
    parse_ts,
    read_command_result,
    reason,
    succeeded,
)
from tests.support.samples import SAMPLES


def sample_text(name: str) -> str:
    return (SAMPLES / name).read_text()


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(sample_text(name))
    return loaded


PONG_SAMPLES = sorted(p.name for p in SAMPLES.glob("*pong*.json"))
PUSH_SAMPLES = sorted(p.name for p in SAMPLES.glob("p*_*.json") if p.name.startswith(("public_", "private_")))


def test_samples_directory_has_pongs_and_pushes() -> None:
    assert len(PONG_SAMPLES) >= 6
    assert len(PUSH_SAMPLES) >= 30


@pytest.mark.parametrize("name", PONG_SAMPLES)
def test_every_pong_shape_is_classified_as_pong(name: str) -> None:
    assert classify_control(FRAMES.decode(sample_text(name))) is Control.PONG


def test_spot_pong_with_op_ping_is_a_pong_not_an_ack() -> None:
    frame = FRAMES.decode(sample_text("op_pong_public_spot.json"))
    assert frame.op == "ping"
    assert classify_control(frame) is Control.PONG


@pytest.mark.parametrize(
    ("name", "kind", "ok"),
    [
        ("op_auth_success.json", Control.AUTH_ACK, True),
        ("op_auth_success_req_id.json", Control.AUTH_ACK, True),
        ("op_auth_failure.json", Control.AUTH_ACK, False),
        ("op_auth_failure_raw_log.json", Control.AUTH_ACK, False),
        ("trade_auth_success.json", Control.AUTH_ACK, True),
        ("op_subscribe_success.json", Control.OP_ACK, True),
        ("op_subscribe_success_spot.json", Control.OP_ACK, True),
        ("op_subscribe_success_private.json", Control.OP_ACK, True),
        ("op_subscribe_success_rpi.json", Control.OP_ACK, True),
        ("op_subscribe_failure.json", Control.OP_ACK, False),
        ("op_subscribe_failure_already_subscribed.json", Control.OP_ACK, False),
        ("op_subscribe_failure_spot_args_size.json", Control.OP_ACK, False),
        ("op_unsubscribe_success.json", Control.OP_ACK, True),
        ("op_subscribe_success_option.json", Control.COMMAND_RESP, True),
        ("trade_order_create_response.json", Control.ORDER_ENTRY, True),
    ],
)
def test_control_samples_are_classified_in_protocol_order(name: str, kind: Control, ok: bool) -> None:
    frame = FRAMES.decode(sample_text(name))
    assert frame.topic is None
    assert classify_control(frame) is kind
    assert succeeded(frame) is ok


def test_auth_failure_reason_is_bybits_text() -> None:
    assert reason(FRAMES.decode(sample_text("op_auth_failure.json"))) == "Params Error"


def test_spot_args_size_reason_is_unescaped_text() -> None:
    assert reason(FRAMES.decode(sample_text("op_subscribe_failure_spot_args_size.json"))) == "args size >10"


def test_legacy_auth_resp_type_is_an_auth_ack() -> None:
    frame = FRAMES.decode(b'{"success":true,"type":"AUTH_RESP","conn_id":"x"}')
    assert classify_control(frame) is Control.AUTH_ACK


def test_frame_without_any_known_marker_is_unknown() -> None:
    assert classify_control(FRAMES.decode(b'{"hello":"world"}')) is Control.UNKNOWN
    assert classify_control(FRAMES.decode(b"{}")) is Control.UNKNOWN


def test_option_command_resp_topics_are_read_from_data() -> None:
    frame = FRAMES.decode(sample_text("op_subscribe_success_option.json"))
    result = read_command_result(frame.data)
    assert result.success_topics == ("orderbook.100.BTC-6JAN23-18000-C",)
    assert result.fail_topics == ()


@pytest.mark.parametrize("name", PUSH_SAMPLES)
def test_push_envelope_decodes_once_and_keeps_data_raw(name: str) -> None:
    expected = sample(name)
    frame = FRAMES.decode(sample_text(name))
    assert frame.topic == expected["topic"]
    assert frame.type == expected.get("type")
    assert frame.ts == expected.get("ts")
    assert frame.cts == expected.get("cts")
    assert frame.cs == expected.get("cs")
    assert frame.id == expected.get("id")
    assert frame.creation_time == expected.get("creationTime")
    assert isinstance(frame.data, msgspec.Raw)
    assert msgspec.json.decode(frame.data) == expected["data"]


def test_private_push_has_creation_time_and_no_ts_or_type() -> None:
    frame = FRAMES.decode(sample_text("private_order.json"))
    assert frame.creation_time == 1672364262474
    assert frame.ts is None
    assert frame.type is None


def test_unknown_fields_are_ignored_and_missing_ones_defaulted() -> None:
    frame = FRAMES.decode(b'{"topic":"tickers.X","brandNew":{"a":[1]},"ts":1}')
    assert frame.topic == "tickers.X"
    assert frame.ts == 1
    assert frame.cs is None
    assert frame.data is NO_DATA


def test_numeric_string_ts_is_accepted() -> None:
    assert parse_ts(FRAMES.decode(b'{"topic":"t","ts":"1772694601512"}').ts) == 1772694601512
    assert parse_ts(5) == 5
    assert parse_ts(None) is None


@pytest.mark.parametrize("bad", ["", "12a", "-5", "1.5", "١٢"])
def test_non_numeric_ts_string_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="ts"):
        parse_ts(bad)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("not json", "invalid_json"),
        ('{"topic": "t"', "invalid_json"),
        ("[1, 2]", "not_an_object"),
        ('"pong"', "not_an_object"),
        ('{"topic": 5}', "bad_topic"),
        ('{"topic": "t", "ts": 1.5}', "bad_ts"),
        ('{"op": "subscribe", "success": "yes"}', "bad_success"),
        ('{"topic": "t", "creationTime": "1"}', "bad_creationTime"),
    ],
)
def test_unreadable_frames_get_a_stable_kind(text: str, kind: str) -> None:
    with pytest.raises(msgspec.DecodeError) as caught:
        FRAMES.decode(text)
    assert describe_decode_error(caught.value) == kind


def test_subscribe_and_unsubscribe_requests_carry_one_topic() -> None:
    assert encode_op("subscribe", "orderbook.50.BTCUSDT", "orderbook.50.BTCUSDT") == (
        '{"req_id":"orderbook.50.BTCUSDT","op":"subscribe","args":["orderbook.50.BTCUSDT"]}'
    )
    assert json.loads(encode_op("unsubscribe", "#3", "x")) == {
        "req_id": "#3",
        "op": "unsubscribe",
        "args": ["x"],
    }


def test_ping_request_shape_matches_the_docs_sample() -> None:
    documented = sample("op_ping_request.json")
    assert json.loads(encode_ping("100001")) == documented


def test_excerpt_cuts_long_frames_and_decodes_bytes() -> None:
    assert excerpt("x" * 10, limit=4) == "xxxx…"
    assert excerpt(b"\xffabc") == "\ufffdabc"
    assert excerpt("short") == "short"
