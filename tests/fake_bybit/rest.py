"""Bybit's v5 REST endpoints the gateway uses to re-sync account state (PROTOCOL.md §9.8), answered from
the `AccountLedger` and never kinder than Bybit's docs (see the README section "Where the fake is stricter
than the docs"):

- `/v5/order/realtime`: open orders only. open-order.mdx: "`0`(default): query open status orders (e.g.,
  New, PartiallyFilled) **only**". For linear "either `symbol`, `baseCoin`, `settleCoin` is **required**".
- `/v5/order/history`: closed orders. order-list.mdx: "Cancelled", "Rejected", "Deactivated" "can be
  query" only for "the last 24 hours"; other closed orders 7 days; older, only "orders which have fills".
- `/v5/position/list`: position.mdx: "If `symbol`=null and `settleCoin` specified, it returns position size
  greater than zero"; "If `symbol` passed, it returns data regardless of having position or not".
- `/v5/account/wallet-balance`: wallet-balance.mdx: `coin` "If not passed, it returns non-zero asset info".
- `/v5/execution/list`: newest first, `limit` "[`1`, `100`]. Default: `50`", option `baseCoin` "For type
  `option`, default value is BTC", 7-day windows, and a retention the fake keeps (`execution_retention_ms`).

Signed as Bybit specifies: X-BAPI-SIGN is the lowercase hex HMAC-SHA256 of `timestamp + api_key +
recv_window + query string` as sent. Failures answer in Bybit's shape (`retCode` 10003 invalid key, 10004
bad signature, 10002 timestamp outside the window, 10001 bad parameters, 10006 too many visits).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fake_bybit.ledger import (
    OPEN_STATUSES,
    UNFILLED_END_STATUSES,
    AccountLedger,
    base_coin,
    is_zero,
    settle_coin,
)
from tests.fake_bybit.paging import WEEK_MS, ListRefused, paginate, time_window

__all__ = ["REST_PATHS", "TOO_MANY_VISITS", "WEEK_MS", "encode", "handle", "reply", "rest_signature"]

JsonObject = dict[str, Any]

DAY_MS = 24 * 3600 * 1000
TOO_MANY_VISITS = 10006  # rate-limit.mdx: `"retCode": 10006, "retMsg": "Too many visits!"`
REST_PATHS = frozenset(
    {
        "/v5/account/wallet-balance",
        "/v5/position/list",
        "/v5/order/realtime",
        "/v5/order/history",
        "/v5/execution/list",
    }
)


def rest_signature(secret: str, timestamp: str, api_key: str, recv_window: str, query: str) -> str:
    payload = f"{timestamp}{api_key}{recv_window}{query}"
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def handle(
    path_and_query: str,
    headers: Mapping[str, str],
    accounts: Mapping[str, str],
    ledger: AccountLedger,
    now_ms: int,
    *,
    execution_retention_ms: int = WEEK_MS,
) -> tuple[int, JsonObject]:
    parts = urlsplit(path_and_query)
    ledger.requests.append(parts.path)
    ledger.queries.append(path_and_query)
    failure = _check_signature(parts.query, headers, accounts, now_ms)
    if failure is not None:
        return 200, reply(failure[0], failure[1], {}, now_ms)  # Bybit answers auth failures with HTTP 200
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    lister: Callable[[Mapping[str, str], AccountLedger, int], JsonObject] = {
        "/v5/account/wallet-balance": _wallet_balance,
        "/v5/position/list": _positions,
        "/v5/order/realtime": _open_orders,
        "/v5/order/history": _order_history,
        "/v5/execution/list": lambda q, led, now: _executions(q, led, now, execution_retention_ms),
    }[parts.path]
    try:
        return 200, reply(0, "OK", lister(query, ledger, now_ms), now_ms)
    except ListRefused as refused:
        return 200, reply(refused.code, refused.message, {}, now_ms)


# ---- the endpoints -----------------------------------------------------------------------------------


def _wallet_balance(query: Mapping[str, str], ledger: AccountLedger, now_ms: int) -> JsonObject:
    account_type = query.get("accountType", "")
    if account_type != "UNIFIED":
        raise ListRefused(f"accountType must be UNIFIED, got {account_type!r}")
    held = ledger.coins.get(account_type, {})
    asked = [coin for coin in query.get("coin", "").split(",") if coin]
    if asked:
        coins = [held[coin] for coin in asked if coin in held]
    else:
        coins = [row for row in held.values() if not _empty_coin(row)]
    row = ledger.wallet_row(account_type, coins)
    return {"list": [] if row is None else [row]}


def _empty_coin(row: Mapping[str, Any]) -> bool:
    # wallet-balance.mdx: "currency information with assets or liabilities of 0 is not returned".
    return all(is_zero(row.get(name)) for name in ("walletBalance", "equity", "borrowAmount"))


def _positions(query: Mapping[str, str], ledger: AccountLedger, now_ms: int) -> JsonObject:
    category = _category(query, ("linear", "inverse", "option"))
    symbol, settle = query.get("symbol", ""), query.get("settleCoin", "")
    if category == "linear" and not symbol and not settle:
        raise ListRefused("linear: either symbol or settleCoin is required")
    rows = [row for (cat, _, _), row in ledger.positions.items() if cat == category]
    if symbol:
        rows = [row for row in rows if row["symbol"] == symbol]  # "regardless of having position or not"
    else:
        # Only open positions without a symbol. position.mdx says so for `settleCoin`; for inverse ("query all
        # open positions") and option it is the harsher reading of what the docs leave open.
        rows = [row for row in rows if not is_zero(row.get("size"))]
        if settle:
            rows = [row for row in rows if settle_coin(category, row["symbol"]) == settle]
        if category == "option" and query.get("baseCoin"):
            rows = [row for row in rows if base_coin(category, row["symbol"]) == query["baseCoin"]]
    rows.sort(key=lambda row: (row["symbol"], int(row["positionIdx"])))
    page = paginate("/v5/position/list", query, rows, maximum=200, default=20)
    return _listed(category, page.rows, page.next_cursor)


def _open_orders(query: Mapping[str, str], ledger: AccountLedger, now_ms: int) -> JsonObject:
    category = _category(query, ("linear", "inverse", "spot", "option"))
    if category == "linear" and not (query.get("symbol") or query.get("baseCoin") or query.get("settleCoin")):
        raise ListRefused("linear: either symbol, baseCoin or settleCoin is required")
    if query.get("openOnly", "0") not in ("0", ""):
        raise ListRefused("openOnly=1 is not offered by the fake (see order history)")
    rows = [row for row in _orders(query, ledger, category) if row["orderStatus"] in OPEN_STATUSES]
    rows.sort(key=lambda row: int(row["createdTime"]), reverse=True)  # "sorted by the `createdTime`"
    page = paginate("/v5/order/realtime", query, rows, maximum=50, default=20)
    return _listed(category, page.rows, page.next_cursor)


def _order_history(query: Mapping[str, str], ledger: AccountLedger, now_ms: int) -> JsonObject:
    category = _category(query, ("linear", "inverse", "spot", "option"))
    start, end = time_window(query, now_ms)
    status = query.get("orderStatus", "")
    rows = []
    for row in _orders(query, ledger, category):
        updated = int(row["updatedTime"])
        if row["orderStatus"] in OPEN_STATUSES or not start <= updated <= end:
            continue
        age = now_ms - updated
        unfilled = row["orderStatus"] in UNFILLED_END_STATUSES and is_zero(row.get("cumExecQty"))
        if unfilled and age > DAY_MS:
            continue  # "The orders in the last 24 hours": the only ones with "Cancelled", "Rejected", ...
        if age > WEEK_MS and is_zero(row.get("cumExecQty")):
            continue  # "beyond 7 days": "orders which have fills only"
        if status and row["orderStatus"] != status:
            continue
        rows.append(row)
    rows.sort(key=lambda row: int(row["createdTime"]), reverse=True)
    page = paginate("/v5/order/history", query, rows, maximum=50, default=20)
    return _listed(category, page.rows, page.next_cursor)


def _orders(query: Mapping[str, str], ledger: AccountLedger, category: str) -> list[JsonObject]:
    """Orders of `category` that the filters select, by the docs' priority orderId > orderLinkId > symbol >
    baseCoin (settleCoin last)."""
    rows = [row for row in ledger.orders.values() if row["category"] == category]
    if query.get("orderId"):
        return [row for row in rows if row["orderId"] == query["orderId"]]
    if query.get("orderLinkId"):
        return [row for row in rows if row.get("orderLinkId") == query["orderLinkId"]]
    return _by_instrument(query, rows, category)


def _executions(query: Mapping[str, str], ledger: AccountLedger, now_ms: int, retention_ms: int) -> JsonObject:
    category = _category(query, ("linear", "inverse", "spot", "option"))
    start, end = time_window(query, now_ms)
    start = max(start, now_ms - retention_ms)  # older fills are gone (the fake's retention, see README)
    rows = [row for row in ledger.executions if row["category"] == category and start <= int(row["execTime"]) <= end]
    if query.get("orderId"):
        rows = [row for row in rows if row["orderId"] == query["orderId"]]
    else:
        scoped = dict(query)
        if category == "option" and not scoped.get("symbol") and not scoped.get("baseCoin"):
            scoped["baseCoin"] = "BTC"  # "For type `option`, default value is BTC"
        rows = _by_instrument(scoped, rows, category)
    if query.get("execType"):
        rows = [row for row in rows if row["execType"] == query["execType"]]
    # "sorted by `execTime` in descending order"; ties as the docs recommend: execId + orderId + leavesQty.
    rows.sort(key=lambda row: (int(row["execTime"]), row["execId"], row["orderId"], row["leavesQty"]), reverse=True)
    page = paginate("/v5/execution/list", query, rows, maximum=100, default=50)
    return _listed(category, page.rows, page.next_cursor)


def _by_instrument(query: Mapping[str, str], rows: list[JsonObject], category: str) -> list[JsonObject]:
    if query.get("symbol"):
        return [row for row in rows if row["symbol"] == query["symbol"]]
    if query.get("baseCoin"):
        rows = [row for row in rows if base_coin(category, row["symbol"]) == query["baseCoin"]]
    if query.get("settleCoin"):
        rows = [row for row in rows if settle_coin(category, row["symbol"]) == query["settleCoin"]]
    return rows


# ---- shapes ------------------------------------------------------------------------------------------


def _category(query: Mapping[str, str], allowed: tuple[str, ...]) -> str:
    category = query.get("category", "")
    if category not in allowed:
        raise ListRefused(f"category must be one of {', '.join(allowed)}, got {category!r}")
    return category


def _listed(category: str, rows: list[JsonObject], cursor: str) -> JsonObject:
    # REST list items carry no `category`: it is on the result (a client must not rely on the item's).
    items = [{key: value for key, value in row.items() if key != "category"} for row in rows]
    return {"category": category, "list": items, "nextPageCursor": cursor}


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


def reply(code: int, message: str, result: JsonObject, now_ms: int) -> JsonObject:
    return {"retCode": code, "retMsg": message, "result": result, "retExtInfo": {}, "time": now_ms}


def encode(body: JsonObject) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
