"""The socket inbox: every message of a read in one await, in order, with websockets' own close and size rules.

Bytes go straight into the connection's `data_received`, cut where each test wants, so what one read delivers
is exact (a real socket may split or join them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.uri import parse_uri
from websockets.utils import accept_key

from stream_worker.exchange.socket_inbox import PAUSE_AT, InboxConnection

MAX_SIZE = 1024


class FakeTransport(asyncio.Transport):
    """Records what the connection writes and whether reading is paused; closing calls `connection_lost`."""

    def __init__(self, connection: InboxConnection) -> None:
        super().__init__()
        self.connection = connection
        self.written: list[bytes] = []
        self.reading = True
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.connection.connection_lost(None)


def server_frame(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=False, extensions=[])


def text(payload: str) -> bytes:
    return server_frame(Opcode.TEXT, payload.encode())


@pytest.fixture
async def opened() -> AsyncIterator[tuple[InboxConnection, FakeTransport]]:
    protocol = ClientProtocol(parse_uri("ws://bybit.test/v5/public/linear"), max_size=MAX_SIZE)
    connection = InboxConnection(protocol, ping_interval=None, close_timeout=0.05)
    transport = FakeTransport(connection)
    connection.connection_made(transport)
    handshake = asyncio.create_task(connection.handshake())
    await asyncio.sleep(0)  # the request is written
    assert connection.request is not None
    key = connection.request.headers["Sec-WebSocket-Key"]
    connection.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
    )
    await handshake
    yield connection, transport
    transport.abort()


async def test_several_frames_in_one_read_are_handed_over_together_in_order(
    opened: tuple[InboxConnection, FakeTransport],
) -> None:
    connection, _ = opened
    connection.data_received(text('{"n":1}') + text('{"n":2}') + server_frame(Opcode.BINARY, b"\x01") + text("é"))
    assert await connection.wait_messages() == ['{"n":1}', '{"n":2}', b"\x01", "é"]


async def test_a_frame_split_across_reads_is_handed_over_once_complete(
    opened: tuple[InboxConnection, FakeTransport],
) -> None:
    connection, _ = opened
    wire = text('{"topic":"tickers.BTCUSDT"}') + text('{"n":2}')
    connection.data_received(wire[:5])
    waiting = asyncio.create_task(connection.wait_messages())
    await asyncio.sleep(0)
    assert not waiting.done()
    connection.data_received(wire[5:33])  # the first frame completes, the second starts
    assert await waiting == ['{"topic":"tickers.BTCUSDT"}']
    connection.data_received(wire[33:])
    assert await connection.wait_messages() == ['{"n":2}']


async def test_a_fragmented_message_is_joined(opened: tuple[InboxConnection, FakeTransport]) -> None:
    connection, _ = opened
    connection.data_received(server_frame(Opcode.TEXT, b'{"a":', fin=False))
    connection.data_received(server_frame(Opcode.CONT, b"1", fin=False) + server_frame(Opcode.CONT, b"}"))
    assert await connection.wait_messages() == ['{"a":1}']


async def test_a_close_frame_mid_read_delivers_what_came_before_then_ends_cleanly(
    opened: tuple[InboxConnection, FakeTransport],
) -> None:
    connection, transport = opened
    close = server_frame(Opcode.CLOSE, Close(CloseCode.NORMAL_CLOSURE, "bye").serialize())
    connection.data_received(text("before") + close + text("after"))
    assert await connection.wait_messages() == ["before"]
    assert transport.written[-1][:1] == b"\x88"  # websockets answered the close itself
    transport.abort()  # the server closes TCP
    with pytest.raises(websockets.ConnectionClosedOK):
        await connection.wait_messages()


async def test_an_oversize_frame_closes_with_1009_after_the_messages_before_it(
    opened: tuple[InboxConnection, FakeTransport],
) -> None:
    connection, transport = opened
    connection.data_received(text("small") + text("x" * (MAX_SIZE + 1)))
    assert await connection.wait_messages() == ["small"]
    transport.abort()
    with pytest.raises(websockets.ConnectionClosedError) as closed:
        await connection.wait_messages()
    assert closed.value.sent is not None
    assert closed.value.sent.code == CloseCode.MESSAGE_TOO_BIG


async def test_invalid_utf8_closes_with_1007_and_nothing_after_it_is_delivered(
    opened: tuple[InboxConnection, FakeTransport],
) -> None:
    connection, transport = opened
    connection.data_received(text("ok") + server_frame(Opcode.TEXT, b"\xff") + text("later"))
    assert await connection.wait_messages() == ["ok"]
    await asyncio.sleep(0.1)  # past close_timeout: a server that never closes is cut off
    assert transport.closed
    with pytest.raises(websockets.ConnectionClosedError) as closed:
        await connection.wait_messages()
    assert closed.value.sent is not None
    assert closed.value.sent.code == CloseCode.INVALID_DATA


async def test_a_waiting_reader_is_woken_by_the_connection_being_lost(
    opened: tuple[InboxConnection, FakeTransport],
) -> None:
    connection, transport = opened
    waiting = asyncio.create_task(connection.wait_messages())
    await asyncio.sleep(0)
    transport.abort()
    with pytest.raises(websockets.ConnectionClosedError):
        await waiting


async def test_reading_pauses_while_the_reader_is_behind_and_resumes_when_it_takes_the_batch(
    opened: tuple[InboxConnection, FakeTransport],
) -> None:
    connection, transport = opened
    connection.data_received(text("m") * PAUSE_AT)
    assert not transport.reading
    assert len(await connection.wait_messages()) == PAUSE_AT
    assert transport.reading
