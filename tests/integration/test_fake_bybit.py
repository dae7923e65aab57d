"""The fake Bybit's connection-level behaviour: paths, pongs, malformed input, op counting, and the
fault hooks (refuse, drop, stall, delayed acks, idle timeout). Driven by a plain websockets client."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from tests.fake_bybit import FakeBybit, FakeBybitError, FakeClient, Samples

SAMPLES = Samples()
VOLATILE = {"conn_id", "req_id", "args"}


def assert_same_shape(reply: dict[str, Any], sample: dict[str, Any]) -> None:
    """Same keys as the recorded frame, same values except ids and times."""
    assert set(reply) == set(sample)
    assert {k: v for k, v in reply.items() if k not in VOLATILE} == {
        k: v for k, v in sample.items() if k not in VOLATILE
    }


def record_of(fake: FakeBybit, conn_id: str) -> Any:
    return next(record for record in fake.connections if record.conn_id == conn_id)


def test_samples_default_to_the_shared_folder_beside_the_repo() -> None:
    beside_repo = Path(__file__).resolve().parents[3] / "shared" / "bybit" / "samples"
    assert SAMPLES.directory.resolve() == beside_repo.resolve()  # shared/ may be a link
    assert "op_pong_public_spot" in SAMPLES.names()


def test_samples_directory_can_be_moved_by_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "only.json").write_text('{"op": "ping"}')
    monkeypatch.setenv("BYBIT_SAMPLES_DIR", str(tmp_path))
    assert Samples().names() == ["only"]
    monkeypatch.setenv("BYBIT_SAMPLES_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="BYBIT_SAMPLES_DIR"):
        Samples()


async def test_unknown_path_is_refused_with_404() -> None:
    async with FakeBybit() as fake:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{fake.url}/v5/public/futures"):
                pass
        assert refused.value.response.status_code == 404
        assert fake.connections == []


@pytest.mark.parametrize(
    ("category", "sample", "req_id"),
    [
        ("spot", "op_pong_public_spot", None),
        ("linear", "op_pong_public_linear", None),
        ("linear", "op_pong_public_linear_req_id", "yQTJaPDH0sty3HDrOEiSX"),
        ("inverse", "op_pong_public_linear", None),
        ("option", "op_pong_public_option", None),
    ],
)
async def test_public_pong_has_the_endpoints_recorded_shape(category: str, sample: str, req_id: str | None) -> None:
    async with FakeBybit() as fake, FakeClient.connect(f"{fake.url}/v5/public/{category}") as client:
        pong = await client.request("ping", req_id=req_id)
    assert_same_shape(pong, SAMPLES.get(sample))
    if category in ("linear", "inverse"):
        assert pong["req_id"] == (req_id or "")  # always present, "" when not sent (§4.2)
    if category == "option":
        assert pong["args"][0].isdigit()


async def test_spot_pong_echoes_req_id_only_when_sent() -> None:
    async with FakeBybit() as fake, FakeClient.connect(f"{fake.url}/v5/public/spot") as client:
        with_id = await client.request("ping", req_id="100001")
        without = await client.request("ping")
    assert with_id["req_id"] == "100001"
    assert "req_id" not in without
    assert with_id["op"] == "ping"
    assert with_id["ret_msg"] == "pong"


async def test_private_pong_echoes_req_id_and_carries_server_time() -> None:
    async with FakeBybit() as fake, FakeClient.connect(f"{fake.url}/v5/private") as client:
        before = int(time.time() * 1000)
        pong = await client.request("ping", req_id="test")
    assert_same_shape(pong, SAMPLES.get("op_pong_private"))
    assert pong["req_id"] == "test"
    assert int(pong["args"][0]) >= before


async def test_conn_ids_follow_each_endpoints_format() -> None:
    async with FakeBybit() as fake:
        for category in ("spot", "linear", "option", "private"):
            path = "private" if category == "private" else f"public/{category}"
            async with FakeClient.connect(f"{fake.url}/v5/{path}") as client:
                await client.request("ping")
    ids = {record.category: record.conn_id for record in fake.connections}
    assert len(ids["spot"]) == 36  # a UUID
    assert ids["spot"].count("-") == 4
    head, _, tail = ids["private"].partition("-")  # xid-like: cejreaspqfh3sjdnldmg-p
    assert len(head) == 20
    assert tail
    assert [len(part) for part in ids["option"].split("-")] == [16, 8, 8, 16, 8]


@pytest.mark.parametrize("frame", ["not json", "[1, 2]", '"ping"', "{"])
async def test_unreadable_frame_gets_an_error_reply_and_the_connection_lives_on(frame: str) -> None:
    async with FakeBybit() as fake, FakeClient.connect(f"{fake.url}/v5/public/linear") as client:
        await client.send(frame)
        error = await client.reply()
        pong = await client.request("ping")
    assert error["success"] is False
    assert error["ret_msg"] == "error:invalid request"
    assert pong["ret_msg"] == "pong"
    assert fake.errors == []


async def test_unknown_op_gets_invalid_op_and_the_connection_lives_on() -> None:
    async with FakeBybit() as fake, FakeClient.connect(f"{fake.url}/v5/public/spot") as client:
        error = await client.request("order.create", args=[], req_id="7")
        no_op = await client.request("", req_id="8")
        pong = await client.request("ping")
    assert error == {
        "success": False,
        "ret_msg": "error:invalid op",
        "conn_id": error["conn_id"],
        "req_id": "7",
        "op": "order.create",
    }
    assert no_op["ret_msg"] == "error:invalid op"
    assert pong["ret_msg"] == "pong"


async def test_binary_frame_is_answered_as_unreadable() -> None:
    async with FakeBybit() as fake, FakeClient.connect(f"{fake.url}/v5/private") as client:
        await client.ws.send(b'{"op":"ping"}')
        error = await client.reply()
    assert error["ret_msg"] == "error:invalid request"


async def test_ops_are_counted_per_connection() -> None:
    async with (
        FakeBybit(auto_push=False) as fake,
        FakeClient.connect(f"{fake.url}/v5/public/linear") as client,
    ):
        for _ in range(3):
            await client.request("ping")
        await client.request("subscribe", ["tickers.BTCUSDT"], req_id="a")
        await client.request("unsubscribe", ["tickers.BTCUSDT"], req_id="b")
        await client.send("garbage")
        await client.reply()
        await client.request("bogus")
        record = fake.connections[0]
    assert record.ops == Counter({"ping": 3, "subscribe": 1, "unsubscribe": 1, "<invalid>": 1, "bogus": 1})
    assert [(r.op, r.args, r.req_id) for r in record.requests] == [
        ("subscribe", ["tickers.BTCUSDT"], "a"),
        ("unsubscribe", ["tickers.BTCUSDT"], "b"),
    ]
    assert record.topics == set()


async def test_subscribe_requests_counts_a_topic_across_connections_and_rejections() -> None:
    async with FakeBybit(auto_push=False) as fake:
        for _ in range(2):
            async with FakeClient.connect(f"{fake.url}/v5/public/linear") as client:
                await client.request("subscribe", ["orderbook.50.BTCUSDT", "publicTrade.BTCUSDT"])
                duplicate = await client.request("subscribe", ["orderbook.50.BTCUSDT"])
                assert duplicate["success"] is False
        assert fake.subscribe_requests("orderbook.50.BTCUSDT") == 4
        assert fake.subscribe_requests("publicTrade.BTCUSDT") == 2
        assert fake.subscribe_requests("tickers.BTCUSDT") == 0
        await fake.wait_for(lambda: all(not record.is_open for record in fake.connections))
        assert all(record.closed_at is not None for record in fake.connections)


@pytest.mark.parametrize("status", [503, 403])
async def test_refused_handshakes_get_the_configured_status_until_accepted_again(status: int) -> None:
    async with FakeBybit() as fake:
        fake.refuse_connections(60, status=status)
        for _ in range(2):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"{fake.url}/v5/public/spot"):
                    pass
            assert refused.value.response.status_code == status
        assert fake.refused_handshakes == 2
        fake.accept_connections()
        async with FakeClient.connect(f"{fake.url}/v5/public/spot") as client:
            assert (await client.request("ping"))["ret_msg"] == "pong"


async def test_refusal_ends_by_itself_after_its_duration() -> None:
    async with FakeBybit() as fake:
        fake.refuse_connections(0.2)
        started = time.monotonic()
        while True:
            try:
                async with FakeClient.connect(f"{fake.url}/v5/private") as client:
                    await client.request("ping")
                    break
            except InvalidStatus:
                assert time.monotonic() - started < 5
                await asyncio.sleep(0.05)  # a client's retry pacing, not synchronisation
    assert time.monotonic() - started >= 0.2
    assert fake.refused_handshakes >= 1


async def test_drop_with_close_frame_sends_the_code_to_every_connection() -> None:
    async with FakeBybit() as fake:
        async with (
            FakeClient.connect(f"{fake.url}/v5/public/spot") as spot,
            FakeClient.connect(f"{fake.url}/v5/private") as private,
        ):
            await spot.request("ping")
            await private.request("ping")
            assert await fake.drop_connections(code=1001, reason="maintenance") == 2
            for client in (spot, private):
                with pytest.raises(ConnectionClosedOK) as closed:
                    await client.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1001
        await fake.wait_for(lambda: not fake.open_connections)
    assert {record.closed_by for record in fake.connections} == {"drop"}


async def test_abrupt_drop_closes_without_a_close_frame() -> None:
    async with FakeBybit() as fake, FakeClient.connect(f"{fake.url}/v5/public/linear") as client:
        await client.request("ping")
        assert await fake.drop_connections(close_frame=False) == 1
        with pytest.raises(ConnectionClosedError) as closed:
            await client.recv()
        assert closed.value.rcvd is None  # 1006: TCP cut, no close frame
        await fake.wait_for(lambda: not fake.open_connections)
        assert fake.connections[0].closed_by == "abort"


async def test_drop_can_target_one_category() -> None:
    async with (
        FakeBybit() as fake,
        FakeClient.connect(f"{fake.url}/v5/public/spot") as spot,
        FakeClient.connect(f"{fake.url}/v5/public/linear") as linear,
    ):
        await spot.request("ping")
        await linear.request("ping")
        assert await fake.drop_connections(category="spot", close_frame=False) == 1
        with pytest.raises(ConnectionClosedError):
            await spot.recv()
        assert (await linear.request("ping"))["ret_msg"] == "pong"


async def test_stalled_endpoint_answers_nothing_until_unstalled() -> None:
    async with (
        FakeBybit(push_interval=0.02) as fake,
        FakeClient.connect(f"{fake.url}/v5/public/linear") as linear,
        FakeClient.connect(f"{fake.url}/v5/public/spot") as spot,
    ):
        await linear.request("subscribe", ["publicTrade.BTCUSDT"])
        await linear.push("publicTrade.BTCUSDT")
        fake.stall("linear")
        await linear.send({"op": "ping", "req_id": "during-stall"})
        await fake.wait_for(lambda: fake.connections[0].ops["ping"] == 1)
        assert (await spot.request("ping"))["ret_msg"] == "pong"  # other endpoints unaffected
        # Whatever was already on the wire arrives; then silence: no pong, no trades.
        drained = await linear.drain(quiet=0.3)
        assert not any(message.get("req_id") == "during-stall" for message in drained)
        fake.unstall()
        pong = await linear.request("ping", req_id="after")
        assert pong["req_id"] == "after"
        await linear.push("publicTrade.BTCUSDT")


async def test_delayed_acks_arrive_late_while_pongs_do_not_wait() -> None:
    async with (
        FakeBybit(auto_push=False) as fake,
        FakeClient.connect(f"{fake.url}/v5/public/linear") as client,
    ):
        fake.delay_acks(0.4)
        started = time.monotonic()
        await client.send({"op": "subscribe", "req_id": "late", "args": ["publicTrade.BTCUSDT"]})
        await client.send({"op": "ping", "req_id": "quick"})
        first = await client.reply()
        second = await client.reply()
        elapsed = time.monotonic() - started
    assert first["req_id"] == "quick"
    assert second["req_id"] == "late"
    assert second["success"] is True
    assert elapsed >= 0.4


async def test_idle_private_connection_is_cut_without_a_close_frame() -> None:
    async with (
        FakeBybit(private_idle_timeout=0.3) as fake,
        FakeClient.connect(f"{fake.url}/v5/private") as client,
    ):
        with pytest.raises(ConnectionClosedError) as closed:
            await client.recv(timeout=5)
        assert closed.value.rcvd is None
        await fake.wait_for(lambda: not fake.open_connections)
        record = fake.connections[0]
        assert record.closed_by == "idle"
        # Timed from when the fake opened it: the client's own clock starts after the handshake, later.
        assert record.closed_at is not None
        assert record.closed_at - record.opened_at >= 0.3


async def test_json_pings_keep_a_private_connection_alive_past_the_idle_timeout() -> None:
    async with (
        FakeBybit(private_idle_timeout=0.4) as fake,
        FakeClient.connect(f"{fake.url}/v5/private") as client,
    ):
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            assert (await client.request("ping"))["op"] == "pong"
            await asyncio.sleep(0.1)  # the client's ping cadence, which is what is under test
        assert fake.connections[0].is_open


async def test_public_connections_have_no_idle_timeout_by_default() -> None:
    async with FakeBybit(private_idle_timeout=0.2) as fake, FakeClient.connect(f"{fake.url}/v5/public/spot"):
        await fake.wait_for(lambda: fake.connections)
        assert fake.connections[0].idle_timeout is None


@pytest.mark.parametrize(("query", "expected"), [("30s", 30.0), ("2m", 120.0), ("5s", 30.0), ("1h", 0.5)])
async def test_max_active_time_sets_the_private_idle_timeout(query: str, expected: float) -> None:
    async with FakeBybit(private_idle_timeout=0.5) as fake:
        async with FakeClient.connect(f"{fake.url}/v5/private?max_active_time={query}") as client:
            await client.request("ping")
        assert fake.connections[0].idle_timeout == expected
        assert fake.connections[0].path == f"/v5/private?max_active_time={query}"


async def test_push_sends_raw_text_even_malformed_to_an_endpoint() -> None:
    async with (
        FakeBybit() as fake,
        FakeClient.connect(f"{fake.url}/v5/public/spot") as spot,
        FakeClient.connect(f"{fake.url}/v5/public/linear") as linear,
    ):
        await spot.request("ping")
        await linear.request("ping")
        assert await fake.push('{"topic": "broken', category="spot") == 1
        assert await spot.ws.recv() == '{"topic": "broken'
        assert await fake.push({"topic": "new.unknown.topic", "data": {"x": 1}}) == 2
        assert (await linear.recv())["topic"] == "new.unknown.topic"


async def test_push_to_subscribers_only_skips_the_others() -> None:
    async with (
        FakeBybit(auto_push=False) as fake,
        FakeClient.connect(f"{fake.url}/v5/public/linear") as subscribed,
        FakeClient.connect(f"{fake.url}/v5/public/linear") as other,
    ):
        await subscribed.request("subscribe", ["publicTrade.BTCUSDT"])
        await other.request("ping")
        message = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1, "data": [], "extra": True}
        assert await fake.push(message, subscribed_only=True) == 1
        assert (await subscribed.push("publicTrade.BTCUSDT"))["extra"] is True


async def test_module_runs_as_a_command_and_prints_its_url() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fake_bybit", "--port", "0", "--api-key", "k", "--api-secret", "s",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(15):
            url = (await process.stdout.readline()).decode().strip()
        assert url.startswith("ws://127.0.0.1:")
        async with FakeClient.connect(f"{url}/v5/public/spot") as client:
            assert (await client.request("ping"))["ret_msg"] == "pong"
    finally:
        process.terminate()
        returncode = await process.wait()
    assert returncode == 0  # SIGTERM stops it cleanly


async def test_a_bug_inside_the_fake_is_reported_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(now_ms: int) -> dict[str, Any]:
        raise RuntimeError("generator bug")

    fake = FakeBybit(push_interval=0.01)
    await fake.start()
    try:
        async with FakeClient.connect(f"{fake.url}/v5/public/spot") as client:
            await client.request("subscribe", ["publicTrade.BTCUSDT"])
            monkeypatch.setattr(fake.stream("publicTrade.BTCUSDT"), "next", broken)
            await fake.wait_for(lambda: fake.errors)
    finally:
        await fake.stop()
    with pytest.raises(FakeBybitError) as failed:
        fake.raise_if_broken()  # what `async with FakeBybit()` does on exit
    assert isinstance(failed.value.__cause__, RuntimeError)
