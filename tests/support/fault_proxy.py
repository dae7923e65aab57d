"""A TCP proxy on 127.0.0.1 that breaks a link on purpose: refuse, cut, blackhole, or forward.

Put it between a process and PostgreSQL, RabbitMQ or the fake Bybit by pointing the process's URL at
`proxy.port`. The listening port stays the same across modes, so clients reconnect to the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum


class Mode(enum.Enum):
    FORWARD = "forward"  # pass bytes both ways
    REFUSE = "refuse"  # not listening: connects fail at once
    BLACKHOLE = "blackhole"  # accept, then never answer (a hung peer)
    STALL = "stall"  # keep every link open but let no byte through, either way, until FORWARD


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self.mode = Mode.FORWARD
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def __aenter__(self) -> FaultProxy:
        await self._listen()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stop_listening()
        await self.cut()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def set_mode(self, mode: Mode) -> None:
        """Switch mode; REFUSE and BLACKHOLE cut the established connections too, STALL freezes them."""
        if mode is Mode.STALL:
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode in (Mode.REFUSE, Mode.BLACKHOLE):
            await self.cut()
        if mode is Mode.REFUSE:
            await self._stop_listening()
        elif self._server is None:
            await self._listen()
        self.mode = mode

    async def cut(self) -> None:
        """Drop every established connection (both sides see the socket close)."""
        links = list(self._links)
        for link in links:
            link.cancel()
        for link in links:
            with contextlib.suppress(asyncio.CancelledError):
                await link
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            if self.mode is Mode.BLACKHOLE:
                await asyncio.Event().wait()
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            try:
                async with asyncio.TaskGroup() as pumps:
                    pumps.create_task(self._pump(reader, upstream_writer))
                    pumps.create_task(self._pump(upstream_reader, writer))
            finally:
                upstream_writer.close()
        except (OSError, ExceptionGroup):
            pass  # either side went away: the link is over
        except asyncio.CancelledError:
            # `cut` cancels the link on purpose. Ending normally keeps asyncio's start_server callback from
            # logging the cancellation as "Exception in callback" (Python 3.11 reads task.exception()).
            pass
        finally:
            self._links.discard(task)
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._flowing.wait()  # STALL: hold the bytes, keep the socket open
            writer.write(data)
            await writer.drain()
        writer.close()
        raise ConnectionResetError("peer closed")  # end the sibling pump too
