"""The signed REST client against the fake's independent implementation of Bybit's REST signing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from shared.enums import Category, ChannelType
from stream_worker.bybit.signing import Credentials
from stream_worker.exchange.rest import BybitRest, BybitRestError
from stream_worker.exchange.resync import wanted_categories
from tests.fake_bybit import FakeBybit


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(accounts={"key": "secret"}, auto_push=False) as server:
        yield server


def rest_url(fake: FakeBybit) -> str:
    return fake.url.replace("ws://", "http://")


async def test_signed_request_is_accepted_and_lists_what_the_stream_said(fake: FakeBybit) -> None:
    await fake.push_account("execution", category="linear", symbol="BTCUSDT", fills=2)
    await fake.push_account("execution", category="spot", symbol="BTCUSDT")
    client = BybitRest(rest_url(fake), Credentials("key", "secret"))
    try:
        listed = await client.get_list("/v5/execution/list", {"category": "linear", "limit": "100"})
    finally:
        await client.close()
    assert len(listed.items) == 2
    assert listed.server_ms > 0


@pytest.mark.parametrize(
    ("credentials", "code"), [(Credentials("key", "wrong"), 10004), (Credentials("nope", "x"), 10003)]
)
async def test_rejected_signature_or_key_raises_with_bybits_code(
    fake: FakeBybit, credentials: Credentials, code: int
) -> None:
    client = BybitRest(rest_url(fake), credentials)
    try:
        with pytest.raises(BybitRestError) as raised:
            await client.get_list("/v5/position/list", {"category": "linear"})
    finally:
        await client.close()
    assert raised.value.code == code
    assert "wrong" not in str(raised.value)  # never the secret


async def test_unreachable_server_is_a_rest_error_not_a_crash() -> None:
    client = BybitRest("http://127.0.0.1:1", Credentials("key", "secret"), timeout=2)
    try:
        with pytest.raises(BybitRestError) as raised:
            await client.get_list("/v5/order/realtime", {"category": "spot"})
    finally:
        await client.close()
    assert raised.value.code == -1


def test_resync_fetches_only_what_the_wanted_private_topics_cover() -> None:
    assert wanted_categories(["order.linear", "wallet"]) == {
        ChannelType.ORDER: {Category.LINEAR},
        ChannelType.BALANCE: set(),
    }
    assert wanted_categories(["position"]) == {
        ChannelType.POSITION: {Category.LINEAR, Category.INVERSE, Category.OPTION}  # no spot positions
    }
    assert wanted_categories(["execution.fast"]) == {}


def closing_once(failures: int) -> tuple[httpx.MockTransport, list[int]]:
    """A transport whose first `failures` requests hit a keep-alive connection the server already closed."""
    calls: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) <= failures:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json={"retCode": 0, "retMsg": "OK", "result": {"list": []}, "time": 1})

    return httpx.MockTransport(handle), calls


async def test_a_request_on_a_connection_the_server_closed_is_retried_once_at_once() -> None:
    transport, calls = closing_once(1)
    rest = BybitRest("http://bybit.invalid", Credentials("key", "secret"), transport=transport)
    try:
        result = await rest.get_list("/v5/position/list", {"category": "linear", "settleCoin": "USDT"})
    finally:
        await rest.close()
    assert result.items == []
    assert len(calls) == 2


async def test_a_second_stale_connection_in_a_row_is_an_error_for_the_resync_backoff() -> None:
    transport, calls = closing_once(2)
    rest = BybitRest("http://bybit.invalid", Credentials("key", "secret"), transport=transport)
    try:
        with pytest.raises(BybitRestError, match="RemoteProtocolError"):
            await rest.get_list("/v5/position/list", {"category": "linear", "settleCoin": "USDT"})
    finally:
        await rest.close()
    assert len(calls) == 2
