"""The exchange side of one worker, built from its settings: the socket factory, the incident capture, the shared
connection budget, and, with an API key, the REST client and the private stream's first core.

The worker wires these to the other layers (the dispatcher's handlers, the account re-sync's publisher); what
each part needs from the settings is decided here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.enums import Endpoint
from stream_worker.bybit.protocol import BybitProtocol
from stream_worker.bybit.signing import Credentials
from stream_worker.exchange.capture import Capture
from stream_worker.exchange.connect_budget import ConnectBudget
from stream_worker.exchange.connection import ConnectionSettings
from stream_worker.exchange.rest import BybitRest
from stream_worker.exchange.socket_factory import SocketFactory
from stream_worker.settings import WorkerSettings

PUBLIC_ENDPOINTS = (Endpoint.SPOT, Endpoint.LINEAR, Endpoint.INVERSE, Endpoint.OPTION)


@dataclass(frozen=True, slots=True)
class Exchange:
    sockets: SocketFactory
    capture: Capture | None
    connect_budget: ConnectBudget
    credentials: Credentials | None
    rest: BybitRest | None  # only with credentials: the re-sync is the only REST user
    # Socket 0 of the private stream, built before the sockets are: the account re-sync follows its auth.
    private_protocol: BybitProtocol | None

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return (*PUBLIC_ENDPOINTS, *((Endpoint.PRIVATE,) if self.credentials is not None else ()))


def build_exchange(
    settings: WorkerSettings,
    *,
    engine: AsyncEngine,
    database_timeout: float,
    connection: ConnectionSettings | None = None,
) -> Exchange:
    credentials = None
    if settings.bybit_api_key is not None and settings.bybit_api_secret is not None:
        credentials = Credentials(settings.bybit_api_key.reveal(), settings.bybit_api_secret.reveal())
    capture = None
    if settings.capture_dir:
        capture = Capture(
            Path(settings.capture_dir), file_bytes=settings.capture_file_bytes, total_bytes=settings.capture_total_bytes
        )
    budget = ConnectBudget(
        engine,
        scope=settings.connect_budget_scope,
        limit=settings.connect_budget,
        window=settings.connect_budget_window,
        timeout=database_timeout,
    )
    sockets = SocketFactory(
        public_url=settings.public_ws_url,
        private_url=settings.private_ws_url,
        ping_interval=settings.ping_interval,
        dead_after=settings.dead_after,
        ack_timeout=settings.ack_timeout,
        window=settings.subscribe_window,
        args_chars=settings.socket_args_chars,
        option_topics=settings.option_socket_topics,
        connection=connection,
        capture=capture,
        admission=budget.admission,
    )
    return Exchange(
        sockets=sockets,
        capture=capture,
        connect_budget=budget,
        credentials=credentials,
        rest=BybitRest(settings.rest_url, credentials) if credentials is not None else None,
        private_protocol=sockets.protocol(Endpoint.PRIVATE, credentials) if credentials is not None else None,
    )
