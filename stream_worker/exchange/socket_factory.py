"""How the worker builds its Bybit sockets: each core's timers and subscribe window, each category's caps, the
URLs, the incident capture and the connection budget, stated once for every socket of every category."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.enums import Endpoint
from stream_worker.bybit.events import Event
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.bybit.shards import ShardLimits
from stream_worker.bybit.signing import Credentials
from stream_worker.exchange.capture import Capture
from stream_worker.exchange.connection import Admission, Connection, ConnectionSettings
from stream_worker.exchange.sockets import ConnectedHandler, EventHandler, Sockets


@dataclass(frozen=True, slots=True, kw_only=True)
class SocketFactory:
    public_url: str  # base; the category's path is appended
    private_url: str
    ping_interval: float
    dead_after: float
    ack_timeout: float
    window: int  # subscribe ops in flight per socket
    args_chars: int  # per public socket, below Bybit's 21,000
    option_topics: int  # per option socket, below Bybit's 2,000
    connection: ConnectionSettings | None = None
    capture: Capture | None = None
    # The connection budget's hook for a URL (Bybit counts new connections per IP and domain): one per domain.
    admission: Callable[[str], Admission] | None = None

    def protocol(self, endpoint: Endpoint, credentials: Credentials | None = None) -> BybitProtocol:
        return BybitProtocol(
            endpoint=endpoint,
            credentials=credentials,
            ping_interval=self.ping_interval,
            dead_after=self.dead_after,
            ack_timeout=self.ack_timeout,
            window=self.window,
        )

    def limits(self, endpoint: Endpoint) -> ShardLimits:
        if endpoint.private:
            return ShardLimits()  # one private socket: private topics are a handful
        topics = self.option_topics if endpoint is Endpoint.OPTION else None
        return ShardLimits(max_chars=self.args_chars, max_topics=topics)

    def category(
        self,
        endpoint: Endpoint,
        *,
        on_event: EventHandler,
        on_connected: ConnectedHandler,
        private: BybitProtocol | None = None,
    ) -> Sockets:
        """All sockets of one category. `private`: the private stream's core, built first for the re-sync."""
        base = self.private_url if endpoint.private else self.public_url
        url = f"{base}{endpoint.path}"

        def make(
            index: int,
            on_socket_event: Callable[[Endpoint, Event], Awaitable[None]],
            on_open: Callable[[Endpoint], None],
        ) -> Connection:
            protocol = private if endpoint.private and index == 0 and private is not None else None
            label = endpoint.value if index == 0 else f"{endpoint.value}-{index}"  # capture files per socket
            return Connection(
                protocol or self.protocol(endpoint),
                url,
                on_socket_event,
                on_connected=on_open,
                settings=self.connection,
                capture=self.capture.socket(label, endpoint.value) if self.capture is not None else None,
                admit=self.admission(url) if self.admission is not None else None,
                close_when_idle=index > 0,
            )

        return Sockets(endpoint, make, limits=self.limits(endpoint), on_event=on_event, on_connected=on_connected)
