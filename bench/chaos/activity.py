"""What the services and the account do during the run: subscription churn through the API, and orders,
fills, positions and wallet changes on the fake. Both run from the run's seeded random generator and keep
going through the outages (that is the point: some of it lands while a link is down).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from bench.chaos.consumers import ServiceConsumer
from bench.chaos.model import MarketKey, Subscriptions, Violations
from tests.fake_bybit import FakeBybit

URL = "/api/v1/subscriptions"

# The market topics the services choose from: few enough for two cores, spread over three sockets, with books
# on each so the book checker always has streams to compare.
MARKET: tuple[dict[str, Any], ...] = (
    {"channel_type": "orderbook", "category": "linear", "symbol": "BTCUSDT"},
    {"channel_type": "orderbook", "category": "linear", "symbol": "ETHUSDT"},
    {"channel_type": "orderbook", "category": "spot", "symbol": "BTCUSDT"},
    {"channel_type": "orderbook", "category": "inverse", "symbol": "BTCUSD"},
    {"channel_type": "trades", "category": "linear", "symbol": "BTCUSDT"},
    {"channel_type": "trades", "category": "spot", "symbol": "ETHUSDT"},
    {"channel_type": "ticker", "category": "linear", "symbol": "ETHUSDT"},
    {"channel_type": "ticker", "category": "inverse", "symbol": "BTCUSD"},
)
# Held for the whole run, so some streams are never interrupted by churn, only by faults.
PERMANENT = {("svc-a", 0), ("svc-a", 2), ("svc-b", 1), ("svc-b", 3)}
ACCOUNT_SERVICES = ("svc-a", "svc-b")  # subscribed to every account class from the start
SERVICES = ("svc-a", "svc-b", "svc-c")
PRIVATE_TOPICS = ("order", "execution", "position", "wallet")
# The capacity rejection's victim: a topic nobody else wants, so refusing it harms nothing else.
REJECTED = {"channel_type": "ticker", "category": "linear", "symbol": "SOLUSDT"}
REJECTED_TOPIC = "tickers.SOLUSDT"


def market_key(request: dict[str, Any]) -> MarketKey:
    channel, category, symbol = request["channel_type"], request["category"], request["symbol"]
    topic = {
        "orderbook": f"orderbook.50.{symbol}",
        "trades": f"publicTrade.{symbol}",
        "ticker": f"tickers.{symbol}",
    }[channel]
    return channel, category, topic


@dataclass
class Churn:
    api: httpx.AsyncClient
    subscriptions: Subscriptions
    consumers: dict[str, ServiceConsumer]
    violations: Violations
    rng: random.Random
    counts: Counter[str] = field(default_factory=Counter)
    snapshot_supported: bool | None = None  # None until the API was asked once

    async def subscribe(self, service: str, request: dict[str, Any]) -> str:
        body = {"requesting_service": service, **request}
        while True:
            try:
                response = await self.api.post(URL, json=body)
            except httpx.HTTPError:
                await asyncio.sleep(0.5)  # the API restarts nothing here, but a busy box times out
                continue
            if response.status_code in (200, 201):
                break
            if response.status_code < 500 and response.status_code != 429:
                raise RuntimeError(f"POST {body} answered {response.status_code}: {response.text}")
            await asyncio.sleep(0.5)  # 503 while the API's database is slow, 429 if throttled: retry
        row = response.json()
        if request["channel_type"] in ("order", "execution", "position", "balance"):
            self.consumers[service].want(request["channel_type"])
        else:
            self.consumers[service].want(request["channel_type"])
            self.subscriptions.created(service, market_key(request), row["id"])
            self.consumers[service].forget_book(market_key(request))
        return str(row["id"])

    async def cancel(self, service: str, key: MarketKey) -> None:
        state = self.subscriptions.state(service, key)
        assert state is not None
        assert state.live
        while True:
            try:
                response = await self.api.delete(f"{URL}/{state.subscription_id}")
            except httpx.HTTPError:
                await asyncio.sleep(0.5)
                continue
            if response.status_code == 200:
                break
            await asyncio.sleep(0.5)
        self.subscriptions.cancelled(service, key, int(time.time() * 1000))
        self.consumers[service].forget_book(key)

    async def setup(self) -> None:
        for service in ACCOUNT_SERVICES:
            for channel in ("order", "execution", "position", "balance"):
                await self.subscribe(service, {"channel_type": channel})
        for service, index in sorted(PERMANENT):
            await self.subscribe(service, MARKET[index])
        self.consumers["svc-c"].want("orderbook")

    async def step(self) -> None:
        """One random change by one random service."""
        service = self.rng.choice(SERVICES)
        live = [key for key, _ in self.subscriptions.live(service)]
        permanent = {market_key(MARKET[i]) for s, i in PERMANENT if s == service}
        action = self.rng.choices(("join", "leave", "late_join", "snapshot"), weights=(4, 4, 2, 1))[0]
        if action == "join":
            candidates = [r for r in MARKET if market_key(r) not in live]
            if candidates:
                await self.subscribe(service, self.rng.choice(candidates))
                self.counts["join"] += 1
        elif action == "leave":
            leavable = [k for k in live if k not in permanent]
            if leavable:
                await self.cancel(service, self.rng.choice(leavable))
                self.counts["leave"] += 1
        elif action == "late_join":
            # A topic another service already streams: this service joins a live book mid-stream.
            others = {k for s in SERVICES if s != service for k, _ in self.subscriptions.live(s)}
            candidates = [r for r in MARKET if market_key(r) in others - set(live)]
            if candidates:
                await self.subscribe(service, self.rng.choice(candidates))
                self.counts["late_join"] += 1
        else:
            await self.request_snapshot(service, live)

    async def request_snapshot(self, service: str, live: list[MarketKey]) -> None:
        books = [k for k in live if k[0] == "orderbook"]
        if not books or self.snapshot_supported is False:
            return
        state = self.subscriptions.state(service, self.rng.choice(books))
        assert state is not None
        try:
            response = await self.api.post(f"{URL}/{state.subscription_id}/snapshot")
        except httpx.HTTPError:
            return
        if response.status_code in (404, 405) and self.snapshot_supported is None:
            self.snapshot_supported = False  # not on this version of the API: skipped for the rest of the run
            return
        self.snapshot_supported = True
        self.counts["snapshot_request"] += 1

    async def capacity_rejection(self, fake: FakeBybit, bound: float) -> None:
        """Bybit refuses one topic wherever it is sent (a refusal the worker reads as "socket full", so it tries
        the topic once on a socket of its own): its subscription must end `failed`."""
        fake.reject_topic(REJECTED_TOPIC, "too many topics for this connection")
        try:
            subscription_id = await self.subscribe("svc-c", REJECTED)
            deadline = time.monotonic() + bound
            status = None
            while time.monotonic() < deadline:
                try:
                    status = (await self.api.get(f"{URL}/{subscription_id}")).json().get("status")
                except httpx.HTTPError:
                    status = None
                if status == "failed":
                    break
                await asyncio.sleep(0.5)
            if status != "failed":
                self.violations.add(
                    "subscription_outcome",
                    {"topic": REJECTED_TOPIC, "status": status, "expected": "failed", "within_s": bound},
                )
            await self.cancel("svc-c", market_key(REJECTED))
        finally:
            fake.clear_rejections()


@dataclass
class Account:
    """Orders, fills, positions and wallet changes on the fake; the fake's ledger is the truth."""

    fake: FakeBybit
    rng: random.Random
    counts: Counter[str] = field(default_factory=Counter)
    open_orders: dict[str, dict[str, str]] = field(default_factory=dict)  # orderId -> symbol, side, qty, price
    positions: dict[str, Decimal] = field(default_factory=dict)  # symbol -> signed size
    usdt: Decimal = Decimal("10000")
    # Subjects ("execution:<execId>", "order:<orderId>", "position:<symbol>", "balance") whose latest push the fake
    # made while its private endpoint was stalled: Bybit lost it on a socket that stayed up, so only the periodic
    # re-sync brings it back (reported, to show the run exercised it).
    lost_on_live_socket: set[str] = field(default_factory=set)

    async def _push(self, kind: str, subject: str, **fields: Any) -> dict[str, Any]:
        message = await self.fake.push_account(kind, **fields)
        if self.fake.stalled("private"):
            self.lost_on_live_socket.add(subject.format(**message["data"][0]))
        else:
            self.lost_on_live_socket.discard(subject.format(**message["data"][0]))
        return message

    async def step(self) -> None:
        action = self.rng.choices(("place", "fill", "cancel", "close", "wallet"), weights=(4, 3, 2, 1, 2))[0]
        if action in ("fill", "cancel") and not self.open_orders:
            action = "place"
        if action == "close" and not any(self.positions.values()):
            action = "wallet"
        if action == "place":
            symbol = self.rng.choice(("BTCUSDT", "ETHUSDT"))
            side = self.rng.choice(("Buy", "Sell"))
            qty = str(self.rng.randint(1, 5) / 100)
            price = "30000" if symbol == "BTCUSDT" else "2000"
            message = await self._push("order", "order:{orderId}", symbol=symbol, side=side, qty=qty, price=price)
            self.open_orders[message["data"][0]["orderId"]] = {
                "symbol": symbol,
                "side": side,
                "qty": qty,
                "price": price,
            }
        elif action == "fill":
            order_id = self.rng.choice(sorted(self.open_orders))
            order = self.open_orders.pop(order_id)
            fields = {"symbol": order["symbol"], "side": order["side"], "qty": order["qty"], "price": order["price"]}
            await self._push("order", "order:{orderId}", status="Filled", order_id=order_id, **fields)
            await self._push("execution", "execution:{execId}", order_id=order_id, **fields)
            signed = Decimal(order["qty"]) * (1 if order["side"] == "Buy" else -1)
            await self._position(
                order["symbol"], self.positions.get(order["symbol"], Decimal(0)) + signed, order["price"]
            )
        elif action == "cancel":
            order_id = self.rng.choice(sorted(self.open_orders))
            order = self.open_orders.pop(order_id)
            await self._push(
                "order",
                "order:{orderId}",
                status="Cancelled",
                order_id=order_id,
                symbol=order["symbol"],
                side=order["side"],
                qty=order["qty"],
                price=order["price"],
            )
        elif action == "close":
            symbol = self.rng.choice(sorted(s for s, size in self.positions.items() if size))
            await self._position(symbol, Decimal(0), "30000" if symbol == "BTCUSDT" else "2000")
        else:
            self.usdt += Decimal(self.rng.randint(-500, 500))
            await self._push("wallet", "balance", coins={"USDT": str(self.usdt), "BTC": "1.5"})
        self.counts[action] += 1

    async def _position(self, symbol: str, size: Decimal, price: str) -> None:
        self.positions[symbol] = size
        side = "Buy" if size >= 0 else "Sell"
        await self._push(
            "position", "position:{symbol}", symbol=symbol, size=str(abs(size)), side=side, entry_price=price
        )
