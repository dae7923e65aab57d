"""Bybit's v5 REST endpoints the gateway uses to re-sync account state (PROTOCOL.md §9.8), and the ledger
that backs them: every private push the fake builds is recorded, so REST answers what the stream said.

Signed as Bybit specifies: headers X-BAPI-API-KEY, X-BAPI-TIMESTAMP, X-BAPI-RECV-WINDOW and X-BAPI-SIGN, the
lowercase hex HMAC-SHA256 of `timestamp + api_key + recv_window + query string`. Failures answer in Bybit's
shape (`retCode` 10003 invalid key, 10004 bad signature, 10002 timestamp outside the window).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

JsonObject = dict[str, Any]

OPEN_STATUSES = frozenset({"New", "PartiallyFilled", "Untriggered"})
REST_PATHS = frozenset({"/v5/account/wallet-balance", "/v5/position/list", "/v5/order/realtime", "/v5/execution/list"})


def rest_signature(secret: str, timestamp: str, api_key: str, recv_window: str, query: str) -> str:
    payload = f"{timestamp}{api_key}{recv_window}{query}"
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


@dataclass
class AccountLedger:
    """The account as the fake's pushes described it."""

    wallets: dict[str, JsonObject] = field(default_factory=dict)  # accountType -> latest wallet row
    orders: dict[str, JsonObject] = field(default_factory=dict)  # orderId -> latest order row
    positions: dict[tuple[str, str, int], JsonObject] = field(default_factory=dict)
    executions: list[JsonObject] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # paths of every REST request, signed or not

    def record(self, message: Mapping[str, Any]) -> None:
        kind = str(message.get("topic", "")).split(".", 1)[0]
        for row in message.get("data", []):
            if kind == "wallet":
                self.wallets[row["accountType"]] = dict(row)
            elif kind == "order":
                self.orders[row["orderId"]] = dict(row)
            elif kind == "position":
                self.positions[(row["category"], row["symbol"], int(row["positionIdx"]))] = dict(row)
            elif kind == "execution" and "execType" in row:  # execution.fast rows are a thinner copy
                self.executions.append(dict(row))


def handle(
    path_and_query: str, headers: Mapping[str, str], accounts: Mapping[str, str], ledger: AccountLedger, now_ms: int
) -> tuple[int, JsonObject]:
    parts = urlsplit(path_and_query)
    ledger.requests.append(parts.path)
    failure = _check_signature(parts.query, headers, accounts, now_ms)
    if failure is not None:
        return 200, _reply(failure[0], failure[1], {}, now_ms)  # Bybit answers auth failures with HTTP 200
    query = dict(parse_qsl(parts.query))
    category = query.get("category", "")
    if parts.path == "/v5/account/wallet-balance":
        rows = [row for row in ledger.wallets.values() if row["accountType"] == query.get("accountType", "UNIFIED")]
        return 200, _reply(0, "OK", {"list": rows}, now_ms)
    if parts.path == "/v5/position/list":
        rows = [_without_category(r) for (cat, _, _), r in ledger.positions.items() if cat == category]
        return 200, _reply(0, "OK", {"category": category, "list": rows, "nextPageCursor": ""}, now_ms)
    if parts.path == "/v5/order/realtime":
        rows = [
            _without_category(r)
            for r in ledger.orders.values()
            if r["category"] == category and r["orderStatus"] in OPEN_STATUSES
        ]
        return 200, _reply(0, "OK", {"category": category, "list": rows, "nextPageCursor": ""}, now_ms)
    start = int(query.get("startTime", "0"))
    rows = [
        _without_category(r) for r in ledger.executions if r["category"] == category and int(r["execTime"]) >= start
    ]
    rows.sort(key=lambda r: int(r["execTime"]), reverse=True)  # Bybit lists newest first
    return 200, _reply(0, "OK", {"category": category, "list": rows, "nextPageCursor": ""}, now_ms)


def _without_category(row: JsonObject) -> JsonObject:
    # REST list items carry no `category`: it is on the result (a client must not rely on the item's).
    return {key: value for key, value in row.items() if key != "category"}


def _check_signature(
    query: str, headers: Mapping[str, str], accounts: Mapping[str, str], now_ms: int
) -> tuple[int, str] | None:
    lowered = {key.lower(): value for key, value in headers.items()}
    api_key = lowered.get("x-bapi-api-key", "")
    timestamp = lowered.get("x-bapi-timestamp", "")
    recv_window = lowered.get("x-bapi-recv-window", "5000")
    signature = lowered.get("x-bapi-sign", "")
    secret = accounts.get(api_key)
    if secret is None:
        return 10003, "API key is invalid."
    if not timestamp.isdigit() or not (now_ms - int(recv_window) <= int(timestamp) < now_ms + 1000):
        return 10002, "invalid request, please check your server timestamp or recv_window param"
    expected = rest_signature(secret, timestamp, api_key, recv_window, query)
    if not hmac.compare_digest(expected, signature):
        return 10004, "error sign! origin_string[" + f"{timestamp}{api_key}{recv_window}{query}" + "]"
    return None


def _reply(code: int, message: str, result: JsonObject, now_ms: int) -> JsonObject:
    return {"retCode": code, "retMsg": message, "result": result, "retExtInfo": {}, "time": now_ms}


def encode(body: JsonObject) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
