"""A websockets client connection that hands over every message a read delivered at once, not one per `recv`.

Bybit pushes one small event per frame (a book delta, a ticker, a trade), and websockets' `recv` put each
one through its assembler's queue, a future and an async-iterator step. Here `data_received` parses the read
with websockets' own sans-I/O protocol, as before, and appends each complete message to a list; the reader
takes the whole list with one await: 8 % less worker CPU per message on the soak (BENCHMARKS.md, "Issue 17,
second pass"). Everything else stays websockets': the handshake, `open_timeout`, `max_size`, automatic pongs to
protocol pings, the closing handshake, `close()` and the `ConnectionClosed` exceptions the shell maps to
reconnect reasons.

Never call `recv` or iterate over this connection: its messages never reach websockets' assembler.
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event

Message = str | bytes

# Past this many unread messages the transport stops reading, so a reader stuck behind a full account buffer
# pushes back on Bybit instead of growing memory (websockets' own queue pauses at 16 frames; a batch of a
# busy read is bigger than that, and pausing on every batch would cost a syscall each time).
PAUSE_AT = 4096
MAX_FRAGMENTS = 4096  # websockets' own default per message (its recv raised past it); Bybit never fragments


class InboxConnection(ClientConnection):
    """`connect(..., create_connection=InboxConnection)`: then `wait_messages` instead of `recv`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inbox: list[Message] = []
        self._fragments: list[bytes] = []
        self._fragmented_text = False
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._failed = False  # invalid UTF-8 or too many fragments: nothing after it is delivered

    async def wait_messages(self) -> list[Message]:
        """Every message received since the last call, in order; waits while there is none.

        Raises `ConnectionClosedOK` or `ConnectionClosedError` once the connection is closed and every message
        that arrived before the close has been taken, as `recv` does.
        """
        while not self._inbox:
            if self.connection_lost_waiter.done():
                raise self.close_exc
            waiter = self.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        messages, self._inbox = self._inbox, []
        if self._paused:
            self._paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
        return messages

    def process_event(self, event: Event) -> None:
        if self.response is None or not isinstance(event, Frame) or event.opcode not in _DATA:
            super().process_event(event)  # the handshake response, pongs; pings and closes need nothing here
            return
        if self._failed:
            return
        data: bytes | bytearray | memoryview
        if event.opcode is Opcode.CONT:
            self._fragments.append(bytes(event.data))
            if len(self._fragments) > MAX_FRAGMENTS:
                self._fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments")
                return
            if not event.fin:
                return
            data, text = b"".join(self._fragments), self._fragmented_text
            self._fragments = []
        elif not event.fin:
            self._fragments = [bytes(event.data)]
            self._fragmented_text = event.opcode is Opcode.TEXT
            return
        else:
            data, text = event.data, event.opcode is Opcode.TEXT
        if text:
            try:
                message: Message = str(data, "utf-8")
            except UnicodeDecodeError as exc:
                self.set_connection_exc(exc)
                self._fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                return
        else:
            message = bytes(data)
        inbox = self._inbox
        inbox.append(message)
        if len(inbox) == 1:
            self._wake()
        if len(inbox) >= PAUSE_AT and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, code: CloseCode, reason: str) -> None:
        """What `recv` does on a message it cannot return: close with `code`, deliver nothing after it."""
        self._failed = True
        self._fragments = []
        self.protocol.fail(code, reason)
        self.send_data()
        if self.close_timeout is not None:  # a server that never closes its end must not hold the reader
            self.loop.call_later(self.close_timeout, self.transport.abort)


_DATA = frozenset((Opcode.TEXT, Opcode.BINARY, Opcode.CONT))
