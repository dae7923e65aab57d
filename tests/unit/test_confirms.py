"""The confirm window on its own: released in order once acked, and whatever goes back keeps its original order."""

from __future__ import annotations

import asyncio

import pytest
from aiormq.exceptions import DeliveryError
from pamqp import commands as spec

from shared.enums import ChannelType
from shared.events import EventEnvelope
from stream_worker.broker.confirms import Confirmation, ConfirmWindow, Taken
from stream_worker.envelopes.outgoing import Outgoing
from stream_worker.errors import BrokerUnavailable


def item(name: str) -> Outgoing:
    envelope = EventEnvelope(
        event_id=name, event_type="order", category="linear", symbol=None, topic="order",
        exchange_ts=None, received_ts=0, published_ts=0, trace_id="t", payload={},
    )  # fmt: skip
    return Outgoing(envelope=envelope, channel_type=ChannelType.ORDER, routing_key="order.linear", account=True)


def send(window: ConfirmWindow, names: list[str]) -> tuple[list[Taken], list[Confirmation]]:
    loop = asyncio.get_running_loop()
    taken = [window.number(item(name)) for name in names]
    confirmations: list[Confirmation] = [loop.create_future() for _ in taken]
    window.sent(taken, confirmations, sent_at=0.0)
    return taken, confirmations


def names(entries: list[Taken]) -> list[str]:
    return [entry[1].envelope.event_id for entry in entries]


async def test_only_the_acked_head_is_released_and_a_nack_goes_back_in_order() -> None:
    window = ConfirmWindow(10)
    _, (a, b, c, d) = send(window, ["a", "b", "c", "d"])
    b.set_result(spec.Basic.Ack())
    assert window.retire(now=1.0) == (False, False)  # "a" is still out: nothing leaves before it
    a.set_result(spec.Basic.Ack())
    c.set_exception(DeliveryError(None, spec.Basic.Nack()))
    assert window.retire(now=1.0) == (True, True)
    assert window.confirmed == 2
    assert names(list(window.retry)) == ["c"]
    assert len(window) == 1  # "d" waits
    d.set_result(spec.Basic.Ack())


async def test_a_lost_connection_puts_back_everything_unconfirmed_before_older_retries_in_sequence_order() -> None:
    window = ConfirmWindow(10)
    _, (first, second, third) = send(window, ["1", "2", "3"])
    second.set_exception(DeliveryError(None, spec.Basic.Nack()))
    first.set_result(spec.Basic.Ack())
    window.retire(now=0.0)  # "1" confirmed, "2" back for a retry
    assert window.forget_unconfirmed() == 1  # "3"
    await window.reap()
    assert third.cancelled()
    assert names(list(window.retry)) == ["2", "3"]
    assert (window.next_retry() or (0, item("?")))[1].envelope.event_id == "2"
    assert window.republished == 1


async def test_a_write_that_never_happened_goes_back_in_front_in_order() -> None:
    window = ConfirmWindow(10)
    taken = [window.number(item(name)) for name in ["x", "y"]]
    window.give_back(taken)
    assert names(list(window.retry)) == ["x", "y"]
    assert window.idle is False


async def test_a_failed_publish_that_is_not_a_nack_ends_the_session() -> None:
    window = ConfirmWindow(10)
    _, (only,) = send(window, ["z"])
    only.set_exception(ConnectionError("gone"))
    with pytest.raises(BrokerUnavailable):
        window.retire(now=0.0)
    assert window.forget_unconfirmed() == 1
    await window.reap()


async def test_the_window_refills_only_when_a_quarter_is_free() -> None:
    window = ConfirmWindow(8)
    assert window.room() == 8
    _, confirmations = send(window, [str(n) for n in range(7)])
    assert window.room() == 0  # one free slot of eight: not worth a write yet
    for confirmation in confirmations[:2]:
        confirmation.set_result(spec.Basic.Ack())
    window.retire(now=0.0)
    assert window.room() == 3
    window.forget_unconfirmed()
    await window.reap()
