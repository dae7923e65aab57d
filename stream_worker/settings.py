"""The stream worker's settings, read once from the environment by the entry point."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import msgspec

from shared.config import ConfigError, EnvReader, Secret
from shared.routing import DEFAULT_MARKET_MAX_LENGTH
from stream_worker.broker.publish_path import PUBLISH_PATHS, PublishPath

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"

# PROTOCOL.md §1.1-1.2. Demo serves only the private stream; its public data is mainnet's.
BYBIT_HOSTS: Mapping[str, tuple[str, str, str]] = {
    # environment: (public ws base, private ws base, REST base)
    "mainnet": ("wss://stream.bybit.com", "wss://stream.bybit.com", "https://api.bybit.com"),
    "testnet": (
        "wss://stream-testnet.bybit.com",
        "wss://stream-testnet.bybit.com",
        "https://api-testnet.bybit.com",
    ),
    "demo": ("wss://stream.bybit.com", "wss://stream-demo.bybit.com", "https://api-demo.bybit.com"),
}


STALE_AFTER_DEFAULTS: Mapping[str, float] = {
    "orderbook": 30.0,
    "ticker": 30.0,
    "kline": 90.0,
    "trades": 0.0,
    "liquidation": 0.0,
}


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = DEFAULT_DATABASE_URL
    rabbitmq_url: str = DEFAULT_RABBITMQ_URL
    bybit_environment: str = "mainnet"
    public_ws_url: str = BYBIT_HOSTS["mainnet"][0]  # base; the worker appends /v5/public/{category}
    private_ws_url: str = BYBIT_HOSTS["mainnet"][1]  # base; the worker appends /v5/private
    rest_url: str = BYBIT_HOSTS["mainnet"][2]
    bybit_api_key: Secret | None = None
    bybit_api_secret: Secret | None = None
    ping_interval: float = 20.0
    dead_after: float = 40.0  # no frame at all for this long: the socket is dead (default: 2 ping intervals)
    ack_timeout: float = 10.0  # an op unacknowledged this long (from when it was sent) recycles the socket
    subscribe_window: int = 10  # subscribe/unsubscribe ops in flight per socket; the rest wait for acks
    # Per public socket, below Bybit's caps (21,000 args characters; 2,000 option topics, PROTOCOL.md §5.2): a
    # category that needs more opens another socket.
    socket_args_chars: int = 20_000
    option_socket_topics: int = 1_900
    max_frame_bytes: int = 4 * 1024 * 1024  # a bigger frame closes the socket (1009) and it reconnects
    compression: bool = False  # permessage-deflate halves ingest throughput; Bybit is not known to need it
    uvloop: bool = True  # the faster event loop; switch off to debug with the standard one
    reconnect_cap: float = 30.0
    # New Bybit connections per window, shared by every worker of one scope through PostgreSQL; below Bybit's
    # "500 connections within a 5-minute window" per IP and domain (rate-limit.mdx). 0 turns the budget off.
    connect_budget: int = 400
    connect_budget_window: float = 300.0
    # Workers sharing one egress IP must share one scope. One scope for the whole database is the safe default
    # (it can only under-use the limit); give each host its own when workers connect from several IPs.
    connect_budget_scope: str = "shared"
    reconcile_interval: float = 30.0
    worker_id: str = "worker"
    # Membership: a worker silent for lease_ttl is dead and its topics move (failover within ~lease_ttl + 1 s).
    lease_ttl: float = 5.0
    lease_renew_interval: float = 1.0
    book_output: str = "stream"  # stream | top | both: what order-book consumers receive
    book_top_interval: float = 0.1  # seconds between top-N snapshots (book_output top or both)
    book_top_levels: int = 25
    book_checksum_levels: int = 25
    snapshot_timeout: float = 5.0  # an invalid book with no fresh snapshot after this long is resubscribed again
    # Seconds an acknowledged public topic may deliver nothing before it is reported stale and resubscribed once
    # (0: never). Bybit pushes a liquid book every 10-100 ms and a ticker every 50-100 ms on change; a kline
    # "1-60s". Trades and liquidations happen when they happen, so silence proves nothing there by default.
    stale_after: dict[str, float] = msgspec.field(default_factory=lambda: dict(STALE_AFTER_DEFAULTS))
    # A delta whose `u` is not the last + 1 is a gap (resync). Bybit documents that rule only for orderbook.full;
    # off, a jump is applied and counted (`gap_ignored`): the fallback PROTOCOL.md §7.3 asks for (AUDIT C6).
    book_gap_check: bool = True
    market_queue_max_length: int = DEFAULT_MARKET_MAX_LENGTH  # per market-data queue; the oldest are dropped beyond it
    # auto: the batched fast path if aiormq's internals check out at start-up, else aiormq's public basic_publish
    publish_path: PublishPath = "auto"
    # market events arriving within this window share one write to RabbitMQ: less CPU, at most this much latency
    publish_coalesce: float = 0.0  # off: measured no CPU saving (BENCHMARKS.md, Scale)
    shutdown_grace: float = 10.0
    # The publisher or the command listener may be away from RabbitMQ this long before the worker reports
    # itself unhealthy (heartbeat, /health 503, ws_gateway_worker_healthy 0): a broker restart is not a page.
    broker_grace: float = 10.0
    # Incident capture: every raw Bybit frame in and op out, per socket, as rotating gzip JSON lines. "" is off.
    capture_dir: str = ""
    capture_file_bytes: int = 64 * 1024 * 1024  # a capture file is rotated past this many compressed bytes
    capture_total_bytes: int = 1024 * 1024 * 1024  # the oldest capture files are deleted beyond this in all
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464  # Prometheus scrape endpoint (GET /metrics); 0 serves none
    log_level: str = "info"
    log_format: str = "auto"
    # Seconds between account re-syncs over REST while the private stream is up (0: only after a gap): recovers
    # a push Bybit dropped on a live socket. One re-sync of every private channel is about 16 GETs (wallet 1,
    # orders 5, positions 4, executions 6: one per linear settle coin and option base coin) plus pages and one
    # per order or position to resolve; once a minute that is ~0.3 requests/s, far below rate-limit.mdx's 600
    # per 5 s per IP and its per-second per-UID endpoint limits, leaving the budget to whatever else trades
    # from the same IP and key, while a dropped fill still reaches consumers within about a minute.
    account_resync_interval: float = 60.0
    # Option executions are listed per base coin (execution.mdx: "For type `option`, default value is BTC").
    option_base_coins: tuple[str, ...] = ("BTC", "ETH", "SOL")

    @property
    def has_credentials(self) -> bool:
        return self.bybit_api_key is not None and self.bybit_api_secret is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], hostname: str = "worker") -> WorkerSettings:
        """Build settings from environment variables; raises ConfigError naming the bad variable."""
        env = EnvReader(environ)
        d = cls()  # every default is stated once, on the fields above
        environment = env.choice("BYBIT_ENVIRONMENT", d.bybit_environment, tuple(BYBIT_HOSTS))
        public_ws, private_ws, rest = BYBIT_HOSTS[environment]
        # Most specific wins: BYBIT_PUBLIC_WS_URL / BYBIT_PRIVATE_WS_URL, then the shared BYBIT_WS_URL, then the
        # environment's hosts. Separate, because demo's private host serves no public data (demo.mdx) and a
        # regional host may serve only one of the two.
        if env.optional_text("BYBIT_WS_URL") is not None:
            public_ws = private_ws = env.url("BYBIT_WS_URL", public_ws, ("ws", "wss")).rstrip("/")
        if env.optional_text("BYBIT_PUBLIC_WS_URL") is not None:
            public_ws = env.url("BYBIT_PUBLIC_WS_URL", public_ws, ("ws", "wss")).rstrip("/")
        if env.optional_text("BYBIT_PRIVATE_WS_URL") is not None:
            private_ws = env.url("BYBIT_PRIVATE_WS_URL", private_ws, ("ws", "wss")).rstrip("/")
        if env.optional_text("BYBIT_REST_URL") is not None:
            rest = env.url("BYBIT_REST_URL", rest, ("http", "https")).rstrip("/")
        api_key, api_secret = env.secret("BYBIT_API_KEY"), env.secret("BYBIT_API_SECRET")
        if (api_key is None) != (api_secret is None):
            missing = "BYBIT_API_SECRET" if api_secret is None else "BYBIT_API_KEY"
            raise ConfigError(missing, "BYBIT_API_KEY and BYBIT_API_SECRET must be set together")
        ping_interval = env.number("BYBIT_PING_INTERVAL", d.ping_interval, minimum=1, maximum=300)
        lease_ttl = env.number("WS_GATEWAY_LEASE_TTL", d.lease_ttl, minimum=1, maximum=600)
        lease_renew = env.number("WS_GATEWAY_LEASE_RENEW_INTERVAL", min(1.0, lease_ttl / 3), minimum=0.1, maximum=200)
        if lease_renew > lease_ttl / 2:
            # One late renewal must not look like a death: at least two renewals fit in a lease.
            raise ConfigError("WS_GATEWAY_LEASE_RENEW_INTERVAL", "must be at most half of WS_GATEWAY_LEASE_TTL")
        capture_file = env.integer(
            "WS_GATEWAY_CAPTURE_FILE_BYTES", d.capture_file_bytes, minimum=65_536, maximum=1 << 40
        )
        capture_total = env.integer(
            "WS_GATEWAY_CAPTURE_TOTAL_BYTES", d.capture_total_bytes, minimum=65_536, maximum=1 << 50
        )
        if capture_total < capture_file:
            raise ConfigError("WS_GATEWAY_CAPTURE_TOTAL_BYTES", "must be at least WS_GATEWAY_CAPTURE_FILE_BYTES")
        return cls(
            database_url=env.postgres_url("DATABASE_URL", d.database_url),
            rabbitmq_url=env.amqp_url("RABBITMQ_URL", d.rabbitmq_url),
            bybit_environment=environment,
            public_ws_url=public_ws,
            private_ws_url=private_ws,
            rest_url=rest,
            bybit_api_key=api_key,
            bybit_api_secret=api_secret,
            ping_interval=ping_interval,
            dead_after=env.number("BYBIT_DEAD_AFTER", 2 * ping_interval, minimum=1, maximum=900),
            ack_timeout=env.number("BYBIT_ACK_TIMEOUT", d.ack_timeout, minimum=0.1, maximum=300),
            subscribe_window=env.integer("BYBIT_SUBSCRIBE_WINDOW", d.subscribe_window, minimum=1, maximum=1000),
            socket_args_chars=env.integer("BYBIT_SOCKET_ARGS_CHARS", d.socket_args_chars, minimum=50, maximum=21_000),
            option_socket_topics=env.integer(
                "BYBIT_OPTION_SOCKET_TOPICS", d.option_socket_topics, minimum=1, maximum=2_000
            ),
            max_frame_bytes=env.integer("BYBIT_MAX_FRAME_BYTES", d.max_frame_bytes, minimum=65_536, maximum=1 << 30),
            compression=env.flag("BYBIT_COMPRESSION", d.compression),
            uvloop=env.flag("WS_GATEWAY_UVLOOP", d.uvloop),
            reconnect_cap=env.number("BYBIT_RECONNECT_CAP", d.reconnect_cap, minimum=0.1, maximum=600),
            connect_budget=env.integer("WS_GATEWAY_CONNECT_BUDGET", d.connect_budget, minimum=0, maximum=100_000),
            connect_budget_window=env.number(
                "WS_GATEWAY_CONNECT_BUDGET_WINDOW", d.connect_budget_window, minimum=1, maximum=86_400
            ),
            connect_budget_scope=env.text("WS_GATEWAY_CONNECT_BUDGET_SCOPE", d.connect_budget_scope),
            reconcile_interval=env.number(
                "WS_GATEWAY_RECONCILE_INTERVAL", d.reconcile_interval, minimum=0.1, maximum=3600
            ),
            worker_id=env.text("WS_GATEWAY_WORKER_ID", hostname),
            lease_ttl=lease_ttl,
            lease_renew_interval=lease_renew,
            book_output=env.choice("WS_GATEWAY_BOOK_OUTPUT", d.book_output, ("stream", "top", "both")),
            book_top_interval=env.integer(
                "WS_GATEWAY_BOOK_TOP_INTERVAL_MS", round(d.book_top_interval * 1000), minimum=10, maximum=60_000
            )
            / 1000,
            book_top_levels=env.integer("WS_GATEWAY_BOOK_TOP_LEVELS", d.book_top_levels, minimum=1, maximum=1000),
            book_checksum_levels=env.integer(
                "WS_GATEWAY_BOOK_CHECKSUM_LEVELS", d.book_checksum_levels, minimum=1, maximum=1000
            ),
            snapshot_timeout=env.number("WS_GATEWAY_SNAPSHOT_TIMEOUT", d.snapshot_timeout, minimum=0.1, maximum=300),
            stale_after={
                channel: env.number(f"WS_GATEWAY_STALE_AFTER_{channel.upper()}", default, minimum=0, maximum=86_400)
                for channel, default in STALE_AFTER_DEFAULTS.items()
            },
            book_gap_check=env.flag("WS_GATEWAY_BOOK_GAP_CHECK", d.book_gap_check),
            market_queue_max_length=env.integer(
                "WS_GATEWAY_MARKET_QUEUE_MAX_LENGTH", d.market_queue_max_length, minimum=1, maximum=100_000_000
            ),
            publish_path=cast(PublishPath, env.choice("WS_GATEWAY_PUBLISH_PATH", d.publish_path, PUBLISH_PATHS)),
            publish_coalesce=env.integer(
                "WS_GATEWAY_PUBLISH_COALESCE_US", round(d.publish_coalesce * 1e6), minimum=0, maximum=100_000
            )
            / 1e6,
            shutdown_grace=env.number("WS_GATEWAY_SHUTDOWN_GRACE", d.shutdown_grace, minimum=0, maximum=600),
            broker_grace=env.number("WS_GATEWAY_BROKER_GRACE", d.broker_grace, minimum=0, maximum=3600),
            capture_dir=env.optional_text("WS_GATEWAY_CAPTURE_DIR") or d.capture_dir,
            capture_file_bytes=capture_file,
            capture_total_bytes=capture_total,
            metrics_host=env.text("WS_GATEWAY_WORKER_METRICS_HOST", d.metrics_host),
            metrics_port=env.integer("WS_GATEWAY_WORKER_METRICS_PORT", d.metrics_port, minimum=0, maximum=65535),
            log_level=env.choice("LOG_LEVEL", d.log_level, ("debug", "info", "warning", "error")),
            log_format=env.choice("LOG_FORMAT", d.log_format, ("auto", "json", "pretty")),
            account_resync_interval=env.number(
                "WS_GATEWAY_ACCOUNT_RESYNC_INTERVAL", d.account_resync_interval, minimum=0, maximum=86_400
            ),
            option_base_coins=_coins(env.text("BYBIT_OPTION_BASE_COINS", ",".join(d.option_base_coins))),
        )


def _coins(text: str) -> tuple[str, ...]:
    coins = tuple(sorted({coin.strip().upper() for coin in text.split(",") if coin.strip()}))
    if not coins or not all(coin.isalnum() for coin in coins):
        raise ConfigError("BYBIT_OPTION_BASE_COINS", "must be a comma-separated list of coins, e.g. BTC,ETH,SOL")
    return coins
