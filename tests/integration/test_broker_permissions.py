"""Least privilege on RabbitMQ: a consumer user made by `ws-gateway-admin rabbitmq-user` on a throwaway vhost
reads its own service's queue and nothing else, and can neither publish, bind nor declare."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import ChannelAccessRefused

import ws_gateway_admin
from shared.enums import ChannelType
from shared.permissions import consumer_permissions, worker_permissions
from shared.routing import EVENTS_EXCHANGE, service_queue
from tests.support import services
from tests.support.broker_users import BrokerUsers, as_user, broker_users
from tests.support.waiting import wait_until

OWN, OTHER = "svc-own", "svc-other"
ROUTING_KEY = "trades.linear.BTCUSDT"


@pytest.fixture
def vhost() -> Iterator[tuple[str, str]]:
    name = services.unique_name("wsg_perm")
    url = services.create_vhost(name)
    yield name, url
    services.delete_vhost(name)


@pytest.fixture
def users(tmp_path: Path) -> Iterator[BrokerUsers]:
    with broker_users(tmp_path) as made:
        yield made


@pytest.fixture
async def topology(vhost: tuple[str, str]) -> AsyncIterator[AbstractRobustConnection]:
    """As the worker leaves it: the events exchange and two services' trade queues, one event in each."""
    connection = await aio_pika.connect_robust(vhost[1])
    channel = await connection.channel()
    events = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    for service in (OWN, OTHER):
        queue = await channel.declare_queue(service_queue(service, ChannelType.TRADES), durable=True)
        await queue.bind(events, ROUTING_KEY)
    await events.publish(aio_pika.Message(b'{"event": 1}'), routing_key=ROUTING_KEY)
    yield connection
    await connection.close()


async def ignore(message: AbstractIncomingMessage) -> None:
    await message.ack()


async def get_one(channel: AbstractChannel, queue_name: str) -> AbstractIncomingMessage:
    queue = await channel.declare_queue(queue_name, passive=True)
    got: list[AbstractIncomingMessage] = []

    async def fetched() -> bool:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            got.append(message)
        return bool(got)

    await wait_until(fetched, timeout=5, interval=0.05, what=f"a message in {queue_name}")
    return got[0]


async def test_a_consumer_user_reads_its_own_queue_and_nothing_else(
    vhost: tuple[str, str], users: BrokerUsers, topology: AbstractRobustConnection
) -> None:
    user, password = users.make(vhost[0], OWN)
    async with await aio_pika.connect(as_user(vhost[1], user, password)) as connection:
        own = await get_one(await connection.channel(), service_queue(OWN, ChannelType.TRADES))
        assert own.body == b'{"event": 1}'

        channel = await connection.channel()
        other = await channel.declare_queue(service_queue(OTHER, ChannelType.TRADES), passive=True)  # may look
        with pytest.raises(ChannelAccessRefused):
            await other.get(fail=False)  # may not read
        channel = await connection.channel()
        other = await channel.declare_queue(service_queue(OTHER, ChannelType.TRADES), passive=True)
        with pytest.raises(ChannelAccessRefused):
            await other.consume(ignore)

        channel = await connection.channel()  # publisher confirms: the refusal arrives as the confirm
        events = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        with pytest.raises(ChannelAccessRefused):
            await events.publish(aio_pika.Message(b"forged"), routing_key=ROUTING_KEY)

        channel = await connection.channel()
        mine = await channel.declare_queue(service_queue(OWN, ChannelType.TRADES), passive=True)
        with pytest.raises(ChannelAccessRefused):
            await mine.bind(EVENTS_EXCHANGE, "#")  # no widening its own queue to every event

        channel = await connection.channel()
        with pytest.raises(ChannelAccessRefused):
            await channel.declare_queue(service_queue(OWN, ChannelType.TICKER), durable=True)

    admin = await topology.channel()
    untouched = await get_one(admin, service_queue(OTHER, ChannelType.TRADES))
    assert untouched.body == b'{"event": 1}'


async def test_a_service_named_like_a_prefix_of_another_cannot_read_its_queues(
    vhost: tuple[str, str], users: BrokerUsers, topology: AbstractRobustConnection
) -> None:
    # `svc` must not read `svc.own`'s queues although `ws-gateway.svc.` is a prefix of them.
    admin = await topology.channel()
    await admin.declare_queue(service_queue("svc-own.x", ChannelType.TRADES), durable=True)
    user, password = users.make(vhost[0], "svc-own")
    async with await aio_pika.connect(as_user(vhost[1], user, password)) as connection:
        channel = await connection.channel()
        nested = await channel.declare_queue(service_queue("svc-own.x", ChannelType.TRADES), passive=True)
        with pytest.raises(ChannelAccessRefused):
            await nested.get(fail=False)


async def test_running_the_command_again_updates_the_password_and_permissions(
    vhost: tuple[str, str], users: BrokerUsers, topology: AbstractRobustConnection, tmp_path: Path
) -> None:
    user, old_password = users.make(vhost[0], OWN)
    secret = tmp_path / "new.password"
    secret.write_text("a-new-password")
    argv = ["rabbitmq-user", OTHER, "--user", user, "--vhost", vhost[0], "--password-file", str(secret)]
    assert ws_gateway_admin.main(argv) == 0
    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(as_user(vhost[1], user, old_password))
    async with await aio_pika.connect(as_user(vhost[1], user, "a-new-password")) as connection:
        message = await get_one(await connection.channel(), service_queue(OTHER, ChannelType.TRADES))
        assert message.body == b'{"event": 1}'
        channel = await connection.channel()
        own = await channel.declare_queue(service_queue(OWN, ChannelType.TRADES), passive=True)
        with pytest.raises(ChannelAccessRefused):
            await own.get(fail=False)
    listed = await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "-q", "list_user_permissions", user, "--formatter", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    [permissions] = json.loads(listed.stdout)
    assert (permissions["configure"], permissions["write"], permissions["read"]) == consumer_permissions(OTHER)


def test_print_shows_the_exact_commands_without_running_anything(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(command: list[str]) -> subprocess.CompletedProcess[str]:
        raise AssertionError(f"ran {command}")

    assert ws_gateway_admin.main(["rabbitmq-user", "strategy-a", "--print"], run=refuse) == 0
    printed = capsys.readouterr().out
    assert 'rabbitmqctl add_user strategy-a "$RABBITMQ_PASSWORD"' in printed
    assert (
        "rabbitmqctl set_permissions -p / strategy-a '^$' '^$' "
        "'^ws-gateway\\.strategy-a\\.(trades|ticker|orderbook|kline|liquidation|order|execution|position|balance)$'"
    ) in printed
    assert "rabbitmqctl set_user_tags strategy-a" in printed
    assert ws_gateway_admin.main(["rabbitmq-user", "worker-1", "--role", "worker", "--print"], run=refuse) == 0
    assert worker_permissions().configure in capsys.readouterr().out


def test_a_bad_service_name_and_a_failing_rabbitmqctl_are_reported_without_the_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert ws_gateway_admin.main(["rabbitmq-user", "has space", "--print"]) == 1
    assert "not a service name" in capsys.readouterr().err
    secret = tmp_path / "password"
    secret.write_text("do-not-print-me")

    def broken(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 70, stdout="", stderr="Error: unable to connect to node")

    argv = ["rabbitmq-user", "strategy-a", "--password-file", str(secret)]
    assert ws_gateway_admin.main(argv, run=broken) == 1
    captured = capsys.readouterr()
    assert "unable to connect" in captured.err
    assert "do-not-print-me" not in captured.err + captured.out
