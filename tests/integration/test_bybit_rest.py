"""The signed REST client against the fake's independent implementation of Bybit's REST signing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.enums import Category, ChannelType
from stream_worker.bybit.signing import Credentials
from stream_worker.rest import BybitRest, BybitRestError
from stream_worker.resync import wanted_categories
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
