"""The fake Bybit's private endpoint: auth (PROTOCOL.md §3), private subscribe rules, and account pushes
routed to the subscriptions that match them (§9)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.fake_bybit import FakeBybit, FakeClient, Samples, sign

SAMPLES = Samples()
KEY, SECRET = "test-key", "test-secret"


def auth_args(key: str = KEY, secret: str = SECRET, *, ahead_ms: int = 5_000) -> list[Any]:
    expires = int(time.time() * 1000) + ahead_ms
    return [key, expires, sign(secret, expires)]


def private(fake: FakeBybit) -> str:
    return f"{fake.url}/v5/private"


async def authenticated(client: FakeClient, *topics: str) -> None:
    assert (await client.request("auth", auth_args()))["success"] is True
    if topics:
        assert (await client.request("subscribe", list(topics)))["success"] is True


def test_signature_matches_the_protocol_test_vectors() -> None:
    assert sign("test-secret", 1662350400000) == "f072aab6fa18cd774da998325df6cfc87c3ccf10d5722e6b43b570c5feaf6172"
    assert sign("test-secret", "1700000000000") == ("5e1a6810262f270b783cf759f856aadee413643be3c03d0fb89dd22261e41df0")


async def test_valid_auth_is_acked_like_the_recorded_success() -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        bare = await client.request("auth", auth_args())
        record = fake.connections[0]
    sample = SAMPLES.get("op_auth_success")
    assert set(bare) == set(sample)
    assert {k: v for k, v in bare.items() if k != "conn_id"} == {k: v for k, v in sample.items() if k != "conn_id"}
    assert bare["conn_id"] == record.conn_id
    assert record.authenticated is True


async def test_auth_ack_echoes_req_id_when_sent() -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        ack = await client.request("auth", auth_args(), req_id="1e979e9f-c8ea-44f5-a631-79fc82af7f41")
    sample = SAMPLES.get("op_auth_success_req_id")
    assert set(ack) == set(sample)
    assert ack["req_id"] == sample["req_id"]


async def test_expires_may_be_a_numeric_string() -> None:
    expires = str(int(time.time() * 1000) + 5_000)
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        ack = await client.request("auth", [KEY, expires, sign(SECRET, expires)])
    assert ack["success"] is True


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (auth_args(secret="wrong-secret"), "bad signature"),
        (auth_args(ahead_ms=-1_000), "expired"),
        (auth_args(key="other-key"), "unknown api_key"),
        ([KEY, "soon", "abc"], "expires is not an integer"),
        ([KEY, 1], "args must be [api_key, expires, signature]"),
        ("not a list", "args must be [api_key, expires, signature]"),
    ],
)
async def test_failed_auth_says_params_error_and_records_why(args: Any, reason: str) -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        ack = await client.request("auth", args)
        still_open = await client.request("ping")
        record = fake.connections[0]
    sample = SAMPLES.get("op_auth_failure")
    assert set(ack) == set(sample)
    assert ack["ret_msg"] == "Params Error"
    assert ack["success"] is False
    assert still_open["op"] == "pong"  # default: the fake keeps the socket open (UNCONFIRMED, §3.2)
    assert record.authenticated is False
    assert [(a.success, a.reason) for a in fake.auth_attempts] == [(False, reason)]


async def test_expired_by_clock_skew_fails_even_with_a_right_signature() -> None:
    skewed = FakeBybit(accounts={KEY: SECRET}, clock=lambda: time.time() + 60)  # server 60 s ahead
    async with skewed as fake, FakeClient.connect(private(fake)) as client:
        ack = await client.request("auth", auth_args(ahead_ms=5_000))
    assert ack["success"] is False


async def test_auth_attempts_are_timestamped_so_backoff_can_be_checked() -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake:
        for _ in range(3):
            async with FakeClient.connect(private(fake)) as client:
                await client.request("auth", auth_args(secret="nope"))
        async with FakeClient.connect(private(fake)) as client:
            await client.request("auth", auth_args())
    attempts = fake.auth_attempts
    assert [attempt.success for attempt in attempts] == [False, False, False, True]
    assert all(earlier.at <= later.at for earlier, later in itertools.pairwise(attempts))
    assert len({attempt.conn_id for attempt in attempts}) == 4


async def test_failed_auth_can_close_the_socket_when_configured() -> None:
    closing = FakeBybit(accounts={KEY: SECRET}, close_on_auth_failure=True)
    async with closing as fake, FakeClient.connect(private(fake)) as client:
        ack = await client.request("auth", auth_args(secret="nope"))
        with pytest.raises(ConnectionClosed):
            await client.recv()
        await fake.wait_for(lambda: not fake.open_connections)
    assert ack["ret_msg"] == "Params Error"
    assert fake.connections[0].closed_by == "auth"


async def test_second_auth_on_an_authenticated_socket_is_refused_but_keeps_it_authenticated() -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        await authenticated(client)
        again = await client.request("auth", auth_args())
        subscribed = await client.request("subscribe", ["wallet"])
    assert again["success"] is False
    assert subscribed["success"] is True


async def test_auth_on_a_public_endpoint_is_an_invalid_op() -> None:
    async with (
        FakeBybit(accounts={KEY: SECRET}) as fake,
        FakeClient.connect(f"{fake.url}/v5/public/linear") as c,
    ):
        ack = await c.request("auth", auth_args())
    assert ack["ret_msg"] == "error:invalid op"


@pytest.mark.parametrize("topic", ["order", "order.linear", "execution.fast", "position.inverse", "wallet", "greeks"])
async def test_private_topic_before_auth_is_not_authorized(topic: str) -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        ack = await client.request("subscribe", [topic], req_id="early")
    assert ack == {
        "req_id": "early",
        "success": False,
        "ret_msg": "Request not authorized",
        "op": "subscribe",
        "conn_id": fake.connections[0].conn_id,
    }


async def test_private_subscribe_ack_has_the_recorded_shape() -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        await authenticated(client)
        bare = await client.request("subscribe", ["order"])
        with_id = await client.request("subscribe", ["wallet"], req_id="w")
    sample = SAMPLES.get("op_subscribe_success_private")
    assert set(bare) == set(sample)
    assert {k: v for k, v in bare.items() if k != "conn_id"} == {k: v for k, v in sample.items() if k != "conn_id"}
    assert with_id["req_id"] == "w"


@pytest.mark.parametrize(
    ("args", "ret_msg"),
    [
        (["order.perp"], "error:handler not found,topic:order.perp"),
        (["position.spot"], "error:handler not found,topic:position.spot"),  # no spot positions (§9)
        (["publicTrade.BTCUSDT"], "error:handler not found,topic:publicTrade.BTCUSDT"),
        (["order", "order.linear"], "error:all-in-one and category topics in one request,topic:order.linear"),
    ],
)
async def test_private_subscribe_refusals(args: list[str], ret_msg: str) -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        await authenticated(client)
        ack = await client.request("subscribe", args)
    assert ack["success"] is False
    assert ack["ret_msg"] == ret_msg


async def test_private_topics_get_no_snapshot_on_subscribe() -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        await authenticated(client, "order", "wallet", "position", "execution")
        assert await client.drain(quiet=0.2) == []


async def test_order_push_goes_to_all_in_one_and_matching_category_subscribers_only() -> None:
    async with (
        FakeBybit(accounts={KEY: SECRET}) as fake,
        FakeClient.connect(private(fake)) as all_in_one,
        FakeClient.connect(private(fake)) as linear_only,
        FakeClient.connect(private(fake)) as spot_only,
        FakeClient.connect(private(fake)) as not_authed,
    ):
        await authenticated(all_in_one, "order")
        await authenticated(linear_only, "order.linear")
        await authenticated(spot_only, "order.spot")
        await not_authed.request("ping")
        sent = await fake.push_account("order", category="linear", symbol="ETHUSDT", status="New")
        everything = await all_in_one.push("order")
        linear = await linear_only.push("order.linear")
        assert await spot_only.drain(quiet=0.2) == []
        assert await not_authed.drain(quiet=0.0) == []
    assert sent["topic"] == "order"
    assert everything["data"] == sent["data"] == linear["data"]
    assert everything["id"] == sent["id"]
    assert linear["data"][0]["category"] == "linear"


async def test_order_pushes_have_the_sample_fields_and_fresh_ids() -> None:
    sample = SAMPLES.get("private_order")
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        await authenticated(client, "order")
        first = await fake.push_account("order", status="New", qty="2", price="100")
        second = await fake.push_account("order", status="Filled", qty="2", price="100")
    assert set(first) == set(sample)
    assert set(sample["data"][0]) <= set(first["data"][0])
    assert first["id"] != second["id"]
    assert first["data"][0]["orderId"] != second["data"][0]["orderId"]
    new, filled = first["data"][0], second["data"][0]
    assert (new["orderStatus"], new["leavesQty"], new["cumExecQty"], new["avgPrice"]) == ("New", "2", "0", "")
    assert (filled["leavesQty"], filled["cumExecQty"], filled["avgPrice"]) == ("0", "2", "100")
    assert int(filled["updatedTime"]) > int(new["updatedTime"])
    assert isinstance(first["creationTime"], int)
    assert "ts" not in first
    assert "type" not in first


async def test_duplicate_filled_pushes_share_an_order_and_differ_in_cancel_fields() -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        await authenticated(client, "order")
        pair = fake.account.duplicate_filled(category="linear", symbol="BTCUSDT", qty="1", price="30000")
        for message in pair:
            await fake.push_private(message)
        received = [await client.push("order"), await client.push("order")]
    first, second = (message["data"][0] for message in received)
    assert first["orderId"] == second["orderId"]
    assert first["orderStatus"] == second["orderStatus"] == "Filled"
    assert first["rejectReason"] == "EC_NoError"
    assert (second["cancelType"], second["rejectReason"]) == ("CancelByUser", "EC_OrigClOrdIDDoesNotExist")


async def test_multi_fill_execution_has_unique_exec_ids_and_one_order() -> None:
    sample = SAMPLES.get("private_execution")
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        await authenticated(client, "execution.linear")
        await fake.push_account("execution", category="inverse", symbol="BTCUSD")  # not subscribed
        sent = await fake.push_account("execution", category="linear", fills=3, qty="0.5", price="95900.1")
        received = await client.push("execution.linear")
    rows = received["data"]
    assert received["id"] == sent["id"]
    assert set(sample["data"][0]) <= set(rows[0])
    assert len({row["execId"] for row in rows}) == 3
    assert len({row["orderId"] for row in rows}) == 1
    assert [row["leavesQty"] for row in rows] == ["1", "0.5", "0"]
    assert len({row["seq"] for row in rows}) == 1


async def test_execution_fast_is_not_delivered_to_execution_subscribers() -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        await authenticated(client, "execution", "execution.fast.linear")
        await fake.push_account("execution.fast", category="linear")
        fast = await client.push("execution.fast.linear")
        assert await client.drain(quiet=0.2) == []
    assert set(fast["data"][0]) == set(SAMPLES.get("private_execution_fast")["data"][0])


async def test_position_noop_repeats_the_last_state_with_a_new_envelope() -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        await authenticated(client, "position")
        opened = await fake.push_account("position", symbol="BTCUSDT", size="0.5", side="Buy")
        noop = await fake.push_account("position", symbol="BTCUSDT", noop=True)
        closed = await fake.push_account("position", symbol="BTCUSDT", size="0")
        received = [await client.push("position") for _ in range(3)]
    assert [message["data"] for message in received] == [opened["data"], noop["data"], closed["data"]]
    assert noop["data"] == opened["data"]
    assert noop["id"] != opened["id"]
    assert (closed["data"][0]["size"], closed["data"][0]["side"]) == ("0", "")


async def test_wallet_push_lists_the_given_coins() -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        await authenticated(client, "wallet")
        await fake.push_account("wallet", coins={"USDT": "1500.5", "BTC": "0.1"})
        wallet = await client.push("wallet")
    account = wallet["data"][0]
    assert account["accountType"] == "UNIFIED"
    assert [(coin["coin"], coin["walletBalance"]) for coin in account["coin"]] == [
        ("USDT", "1500.5"),
        ("BTC", "0.1"),
    ]
    assert account["totalWalletBalance"] == "1500.6"


async def test_unauthenticated_sockets_never_receive_account_pushes() -> None:
    async with FakeBybit(accounts={KEY: SECRET}) as fake, FakeClient.connect(private(fake)) as client:
        refused = await client.request("subscribe", ["wallet"])
        assert await fake.push_private(fake.account.wallet()) == 0
        assert await client.drain(quiet=0.2) == []
    assert refused["success"] is False
