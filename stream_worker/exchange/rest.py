"""A small signed client for the Bybit v5 REST endpoints the worker reads (account re-sync, §9.8).

Signing as Bybit specifies: X-BAPI-SIGN is the lowercase hex HMAC-SHA256 of
`timestamp + api_key + recv_window + query string`. The query string is built once and sent exactly as
signed. Errors (HTTP, network, Bybit's retCode) become `BybitRestError`; nothing here logs the secret.

Pages: every list endpoint says "Use the `nextPageCursor` token from the response to retrieve the next page",
and its tokens are already percent-encoded (`page_args%3Dfd43...%26symbol%3D6%26`). The token goes back as it
came, the way pybit sends it (`k=v` joined without quoting), never encoded a second time (`%253D`).
A list that still has pages after `max_pages` comes back `truncated`, for the caller to report.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote, urlencode

import httpx
import msgspec

from stream_worker.bybit.signing import Credentials
from stream_worker.errors import WorkerError

MAX_PAGES = 50  # per query: a bound on a runaway cursor; reaching it is reported, never silent
TOO_MANY_VISITS = 10006  # rate-limit.mdx: `"retCode": 10006, "retMsg": "Too many visits!"`


class BybitRestError(WorkerError):
    """A REST call failed: `code` is Bybit's retCode, or -1 for a transport failure (then `http_status`)."""

    def __init__(self, path: str, code: int, message: str, *, http_status: int | None = None) -> None:
        super().__init__(f"Bybit REST {path} failed ({code}): {message}")
        self.path, self.code, self.message, self.http_status = path, code, message, http_status

    @property
    def banned(self) -> bool:
        """rate-limit.mdx: on "403, access too frequent" "wait for at least 10 minutes"."""
        return self.http_status == httpx.codes.FORBIDDEN

    @property
    def rate_limited(self) -> bool:
        return self.code == TOO_MANY_VISITS


class _Reply(msgspec.Struct, frozen=True, kw_only=True):
    ret_code: int = msgspec.field(name="retCode")
    ret_msg: str = msgspec.field(name="retMsg", default="")
    result: msgspec.Raw = msgspec.Raw(b"{}")
    time: int | None = None


class _Page(msgspec.Struct, frozen=True, kw_only=True):
    items: list[msgspec.Raw] = msgspec.field(name="list", default_factory=list)
    next_cursor: str = msgspec.field(name="nextPageCursor", default="")


_REPLY = msgspec.json.Decoder(_Reply)
_PAGE = msgspec.json.Decoder(_Page)


class ListResult(msgspec.Struct, frozen=True, kw_only=True):
    """Every item of a (paged) list, raw as Bybit sent them, and Bybit's time of the first page."""

    items: list[msgspec.Raw]
    server_ms: int
    truncated: bool = False  # more pages were left than `max_pages` allowed


def rest_signature(secret: str, timestamp: str, api_key: str, recv_window: str, query: str) -> str:
    message = f"{timestamp}{api_key}{recv_window}{query}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


# What a request on a keep-alive connection the server closed while it idled looks like in httpx.
STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class BybitRest:
    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        recv_window_ms: int = 5_000,
        timeout: float = 10.0,
        wall: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self._credentials = credentials
        self._max_pages = max_pages
        self._recv_window = str(recv_window_ms)
        self._wall = wall
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def close(self) -> None:
        await self._client.aclose()

    async def get_list(self, path: str, params: Mapping[str, str], *, max_pages: int | None = None) -> ListResult:
        """GET a list endpoint, following `nextPageCursor` for up to `max_pages` pages."""
        max_pages = max_pages or self._max_pages
        items: list[msgspec.Raw] = []
        cursor = ""
        server_ms = int(self._wall() * 1000)
        for page_number in range(max_pages):
            query = urlencode(params)
            if cursor:
                # As it came: `safe="%"` keeps the token's own escapes and only guards against raw separators.
                query = f"{query}&cursor={quote(cursor, safe='%')}" if query else f"cursor={quote(cursor, safe='%')}"
            reply = await self._get(path, query)
            if page_number == 0 and reply.time is not None:
                server_ms = reply.time
            try:
                page = _PAGE.decode(reply.result)
            except msgspec.DecodeError as error:
                raise BybitRestError(path, -1, f"unreadable result: {error}") from error
            items.extend(page.items)
            cursor = page.next_cursor
            if not cursor:
                return ListResult(items=items, server_ms=server_ms)
        return ListResult(items=items, server_ms=server_ms, truncated=True)

    async def _get(self, path: str, query: str) -> _Reply:
        try:
            return await self._get_once(path, query)
        except BybitRestError as error:
            if not isinstance(error.__cause__, STALE_CONNECTION_ERRORS):
                raise
        # A pooled keep-alive connection the server had already closed: the GET never reached it. One
        # immediate retry on a fresh connection, rather than failing the whole re-sync into its backoff.
        return await self._get_once(path, query)

    async def _get_once(self, path: str, query: str) -> _Reply:
        timestamp = str(int(self._wall() * 1000))
        headers = {
            "X-BAPI-API-KEY": self._credentials.api_key,
            "X-BAPI-TIMESTAMP": timestamp,
            "X-BAPI-RECV-WINDOW": self._recv_window,
            "X-BAPI-SIGN": rest_signature(
                self._credentials.api_secret, timestamp, self._credentials.api_key, self._recv_window, query
            ),
        }
        try:
            response = await self._client.get(f"{path}?{query}" if query else path, headers=headers)
        except (TimeoutError, httpx.HTTPError, OSError) as error:
            raise BybitRestError(path, -1, type(error).__name__) from error
        if response.status_code != httpx.codes.OK:
            status = response.status_code
            raise BybitRestError(path, -1, f"HTTP {status}", http_status=status)
        try:
            reply = _REPLY.decode(response.content)
        except msgspec.DecodeError as error:
            raise BybitRestError(path, -1, f"unreadable reply: {error}") from error
        if reply.ret_code != 0:
            raise BybitRestError(path, reply.ret_code, reply.ret_msg)
        return reply
