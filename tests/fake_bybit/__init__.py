"""A fake Bybit v5 WebSocket server for tests: the exchange we own, built from PROTOCOL.md and the
recorded samples in shared/bybit/samples/ (override with $BYBIT_SAMPLES_DIR).

    async with FakeBybit(accounts={"key": "secret"}, auto_push=False) as fake:
        ...  # point the client at f"{fake.url}/v5/public/linear" and f"{fake.url}/v5/private"
        await fake.advance("orderbook.50.BTCUSDT", count=10)
        await fake.inject_book_fault("orderbook.50.BTCUSDT", "gap")
        await fake.push_account("execution", category="linear", fills=2)
        await fake.wait_for(lambda: fake.subscribe_requests("orderbook.50.BTCUSDT") == 2)

Synchronous clients (pybit) use `FakeBybitThread`; other processes use `python -m tests.fake_bybit`.
The hooks are the public methods of `FakeBybit` (server.py).
"""

from tests.fake_bybit.auth import sign
from tests.fake_bybit.books import BOOK_FAULTS, BookFault, BookStream, LocalBook
from tests.fake_bybit.client import FakeClient
from tests.fake_bybit.connections import AuthAttempt, ConnectionRecord, OpRequest
from tests.fake_bybit.market import KlineStream, LiquidationStream, MarketStream, TickerStream, TradeStream
from tests.fake_bybit.samples import Samples, default_samples_dir
from tests.fake_bybit.server import FakeBybit, FakeBybitError
from tests.fake_bybit.thread import FakeBybitThread

__all__ = [
    "BOOK_FAULTS",
    "AuthAttempt",
    "BookFault",
    "BookStream",
    "ConnectionRecord",
    "FakeBybit",
    "FakeBybitError",
    "FakeBybitThread",
    "FakeClient",
    "KlineStream",
    "LiquidationStream",
    "LocalBook",
    "MarketStream",
    "OpRequest",
    "Samples",
    "TickerStream",
    "TradeStream",
    "default_samples_dir",
    "sign",
]
