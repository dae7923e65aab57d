"""Pages, cursors, limits and time windows of Bybit's v5 list endpoints, as strict as the docs allow.

- `limit`: each endpoint documents a range and a default (`[1, 50]`, default 20 for orders; `[1, 200]`,
  default 20 for positions; `[1, 100]`, default 50 for executions). Outside the range the fake refuses the
  request (the docs are silent on what Bybit does; refusing is the harsher reading).
- `cursor`: the docs say "Use the `nextPageCursor` token from the response to retrieve the next page", and
  every documented token is already percent-encoded (`page_token%3D39380%26`, `132766%3A2%2C132766%3A2`).
  A client that sends the token as it came (as pybit does: it joins `k=v` without quoting) makes the server
  decode it once. The fake accepts exactly that; a token encoded a second time (`%253D`) decodes to text
  that is not a token and is refused. A token is also bound to the query it came from.
- time windows: "startTime and endTime are not passed, return 7 days by default"; "Only startTime is passed,
  return range between startTime and startTime+7 days"; "If both are passed, the rule is endTime - startTime
  <= 7 days" (execution.mdx, order-list.mdx). A wider range is refused.

Pure: no I/O; the caller passes the time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote

WEEK_MS = 7 * 24 * 3600 * 1000
PARAMS_ERROR = 10001  # Bybit's "params error" retCode; the exact texts below are the fake's (UNCONFIRMED)

_Row = TypeVar("_Row")


class ListRefused(Exception):
    """A list request Bybit would refuse: answered with `retCode` and `retMsg`."""

    def __init__(self, message: str, code: int = PARAMS_ERROR) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True, kw_only=True)
class Page:
    rows: list[Any]
    next_cursor: str  # "" on the last page


def parse_limit(query: Mapping[str, str], *, maximum: int, default: int) -> int:
    text = query.get("limit")
    if text is None or text == "":
        return default
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise ListRefused(f"limit must be in [1, {maximum}], got {text!r}")
    return int(text)


def paginate(path: str, query: Mapping[str, str], rows: Sequence[_Row], *, maximum: int, default: int) -> Page:
    """The page of `rows` (already filtered and ordered) that `query`'s cursor and limit select."""
    limit = parse_limit(query, maximum=maximum, default=default)
    offset = _offset(path, query)
    end = offset + limit
    following = _cursor(path, query, end) if end < len(rows) else ""
    return Page(rows=list(rows[offset:end]), next_cursor=following)


def time_window(query: Mapping[str, str], now_ms: int) -> tuple[int, int]:
    """[start, end] in ms under the 7-day rule."""
    start_text, end_text = query.get("startTime"), query.get("endTime")
    for name, text in (("startTime", start_text), ("endTime", end_text)):
        if text is not None and not text.isdigit():
            raise ListRefused(f"{name} must be an integer timestamp (ms), got {text!r}")
    if start_text is None and end_text is None:
        return now_ms - WEEK_MS, now_ms
    if end_text is None:
        start = int(start_text or 0)
        return start, start + WEEK_MS
    end = int(end_text)
    start = int(start_text) if start_text is not None else end - WEEK_MS
    if start > end:
        raise ListRefused("startTime must not be after endTime")
    if end - start > WEEK_MS:
        raise ListRefused("endTime - startTime must be <= 7 days")
    return start, end


def _fingerprint(path: str, query: Mapping[str, str]) -> str:
    # The query without cursor and limit: a token is only good for the list it came from.
    kept = sorted((key, value) for key, value in query.items() if key not in ("cursor", "limit"))
    return hashlib.sha256(repr((path, kept)).encode()).hexdigest()[:12]


def _cursor(path: str, query: Mapping[str, str], offset: int) -> str:
    token = f"page_token={offset}&q={_fingerprint(path, query)}&"
    return quote(token, safe="")  # percent-encoded, as every token in the docs is


def _offset(path: str, query: Mapping[str, str]) -> int:
    cursor = query.get("cursor", "")
    if not cursor:
        return 0
    fields = dict(parse_qsl(cursor))
    offset, fingerprint = fields.get("page_token", ""), fields.get("q")
    if not offset.isdigit() or fingerprint is None:
        raise ListRefused(f"invalid cursor {cursor!r} (send nextPageCursor as it came, not encoded again)")
    if fingerprint != _fingerprint(path, query):
        raise ListRefused("cursor does not belong to this query")
    return int(offset)
