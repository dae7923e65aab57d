"""A live status page for people: `GET /` (one HTML page, inline CSS and JS) polls `GET /status.json`.

The JSON comes from the worker's heartbeat (`worker_health`) and the live subscriptions, grouped by topic in SQL.
No API key, outside the OpenAPI schema, so it shows states only: fields are copied by name from an allow-list,
never passed through, because a heartbeat also carries texts (end reasons) that may quote an exception.
Message rates are left to the page: it divides counter deltas by the time between two heartbeats.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Response, Router, get
from litestar.datastructures import State
from litestar.enums import MediaType
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

from control_api.db import Database
from control_api.errors import DatabaseUnavailable
from control_api.routes.common import Db
from control_api.routes.health import worker_health
from shared.api import WorkerMember
from shared.heartbeat import WorkerHeartbeat
from shared.schema import SubscriptionRow, WorkerHeartbeatRow

MAX_TOPICS = 1000
SOCKET_FIELDS = (
    "wanted",
    "connected",
    "authenticated",
    "topics",
    "failed_topics",
    "last_message_age_s",
    "reconnects",
    "auth_failures",
)
PUBLISHER_FIELDS = ("connected", "published", "dropped", "market_depth", "account_depth", "unconfirmed", "reconnects")


class ServiceState(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    status: str


class TopicState(msgspec.Struct, frozen=True, kw_only=True):
    endpoint: str
    topic: str
    status: str  # "failed" if any service's row failed, "active" if all are, else "pending"
    services: list[ServiceState]


class WorkerState(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # "unknown" | "up" | "stale" | "degraded", as in /health
    heartbeat_age_s: float | None = None
    heartbeat_ms: int | None = None  # when the counters below were taken: the page's clock for rates
    sockets: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    publisher: dict[str, Any] = msgspec.field(default_factory=dict)
    counters: dict[str, int] = msgspec.field(default_factory=dict)


class Status(msgspec.Struct, frozen=True, kw_only=True):
    database: str  # "up" | "down"
    worker: WorkerState
    members: list[WorkerMember] = msgspec.field(default_factory=list)  # every worker of the cluster, as in /health
    topics: list[TopicState]
    topics_truncated: bool = False


def _pick(values: Mapping[str, Any] | None, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: values[name] for name in names if values is not None and name in values}


async def _heartbeat(db: Database, worker_id: str) -> tuple[int, dict[str, int]]:
    """The heartbeat's time (epoch ms) and its counters, the worker's and each market's, in one flat map."""
    async with db.transaction() as session:
        row = await session.get(WorkerHeartbeatRow, worker_id)
    if row is None:
        return 0, {}
    heartbeat = WorkerHeartbeat.from_json(row.state)
    counters = dict(heartbeat.counters)
    for endpoint, values in heartbeat.market.items():
        counters |= {f"{endpoint}:{key}": count for key, count in values.items()}
    return int(row.updated_at.timestamp() * 1000), counters


async def _topics(db: Database) -> tuple[list[TopicState], bool]:
    services = func.jsonb_agg(
        aggregate_order_by(
            func.jsonb_build_object("service", SubscriptionRow.requesting_service, "status", SubscriptionRow.status),
            SubscriptionRow.requesting_service,
        )
    )
    query = (
        select(
            SubscriptionRow.endpoint,
            SubscriptionRow.topic,
            services,
            func.bool_or(SubscriptionRow.status == "failed"),
            func.bool_and(SubscriptionRow.status == "active"),
        )
        .where(SubscriptionRow.is_active)
        .group_by(SubscriptionRow.endpoint, SubscriptionRow.topic)
        .order_by(SubscriptionRow.endpoint, SubscriptionRow.topic)
        .limit(MAX_TOPICS + 1)
    )
    async with db.transaction() as session:
        rows = (await session.execute(query)).all()
    topics = [
        TopicState(
            endpoint=endpoint,
            topic=topic,
            status="failed" if any_failed else "active" if all_active else "pending",
            services=[ServiceState(service=s["service"], status=s["status"]) for s in members],
        )
        for endpoint, topic, members, any_failed, all_active in rows[:MAX_TOPICS]
    ]
    return topics, len(rows) > MAX_TOPICS


async def gather_status(db: Database, stale_after: float) -> Status:
    health = await worker_health(db, stale_after)
    try:
        topics, truncated = await _topics(db)
        heartbeat_ms, counters = await _heartbeat(db, health.worker_id) if health.worker_id else (0, {})
    except DatabaseUnavailable:
        return Status(database="down", worker=WorkerState(status=health.status), topics=[])
    sockets = {
        name: _pick(msgspec.to_builtins(values), SOCKET_FIELDS) for name, values in (health.sockets or {}).items()
    }
    worker = WorkerState(
        status=health.status,
        heartbeat_age_s=health.heartbeat_age_s,
        heartbeat_ms=heartbeat_ms or None,
        sockets=sockets,
        publisher=_pick(msgspec.to_builtins(health.publisher) if health.publisher else None, PUBLISHER_FIELDS),
        counters=counters,
    )
    members = health.members or []
    return Status(database="up", worker=worker, members=members, topics=topics, topics_truncated=truncated)


@get("/status.json", include_in_schema=False)
async def status_json(db: Db, state: State) -> Status:
    return await gather_status(db, state.worker_stale_after)


@get("/", include_in_schema=False, media_type=MediaType.HTML)
async def status_page() -> Response[str]:
    return Response(PAGE, media_type=MediaType.HTML, headers={"Cache-Control": "no-store"})


status_routes = Router(path="/", route_handlers=[status_page, status_json], include_in_schema=False)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ws-gateway status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2329; background: #f6f7f9; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; } h2 { font-size: 1rem; margin: 1.4rem 0 .4rem; }
  table { border-collapse: collapse; background: #fff; min-width: 30rem; }
  th, td { border: 1px solid #d8dde3; padding: .25rem .6rem; text-align: left; vertical-align: top; }
  th { background: #eef1f4; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .ok { background: #d9f5df; color: #12602a; } .bad { background: #fbdada; color: #8a1414; }
  .warn { background: #fff1c7; color: #6b4e00; } .none { color: #7a838c; }
  .badge { display: inline-block; padding: 0 .5rem; border-radius: .7rem; font-weight: 600; margin: 0 .2rem .2rem 0; }
  #meta { color: #59636e; }
</style>
</head>
<body>
<h1>ws-gateway <span id="overall" class="badge none">loading</span></h1>
<div id="meta">Polling /status.json every 3 s.</div>
<h2>Stream worker</h2><div id="worker"></div>
<h2>Workers</h2><table id="members"></table>
<h2>Bybit sockets (freshest worker)</h2><table id="sockets"></table>
<h2>Topics and subscribers</h2><table id="topics"></table>
<h2>Publisher</h2><div id="publisher"></div>
<h2>Drops per cause</h2><table id="drops"></table>
<h2>Message rates</h2><table id="rates"></table>
<script>
"use strict";
const POLL_MS = 3000;
let previous = null;  // {ms, counters} of the last heartbeat seen, for rates
let rates = {};

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function badge(text, good) { return el("span", text, "badge " + (good === null ? "none" : good ? "ok" : "bad")); }
function fill(table, head, rows) {
  table.replaceChildren();
  const tr = el("tr"); head.forEach(h => tr.appendChild(el("th", h))); table.appendChild(tr);
  if (!rows.length) { const r = el("tr"), c = el("td", "none", "none"); c.colSpan = head.length; r.appendChild(c);
    table.appendChild(r); }
  rows.forEach(r => table.appendChild(r));
}
function row(cells, attrs) {
  const tr = el("tr");
  Object.entries(attrs || {}).forEach(([k, v]) => tr.setAttribute(k, v));
  cells.forEach(c => tr.appendChild(c instanceof Node ? c : el("td", c)));
  return tr;
}
function cell(child, cls) { const td = el("td", null, cls); td.appendChild(child); return td; }
function yesNo(value, yes, no) {
  if (value === null || value === undefined) return el("td", "n/a", "none");
  return el("td", value ? yes : no, value ? "ok" : "bad");
}
function idle(socket) { return !socket.wanted && !socket.connected; }  // a socket nobody needs is not down
function age(seconds) { return seconds === null || seconds === undefined ? "n/a" : seconds.toFixed(1) + " s"; }

function render(status) {
  const worker = status.worker;
  const healthy = status.database === "up" && worker.status === "up";
  const overall = document.getElementById("overall");
  overall.textContent = healthy ? "healthy" : status.database !== "up" ? "database down" : "worker " + worker.status;
  overall.className = "badge " + (healthy ? "ok" : "bad");
  document.getElementById("meta").textContent = "Updated " + new Date().toLocaleTimeString() + "; polling every 3 s.";

  const w = document.getElementById("worker");
  w.replaceChildren(badge(worker.status, worker.status === "unknown" ? null : worker.status === "up"),
    el("span", "heartbeat age " + age(worker.heartbeat_age_s)));

  fill(document.getElementById("members"), ["worker", "lease", "lease age", "topics", "private stream", "sockets"],
    (status.members || []).map(m => row([
      el("td", m.worker_id), yesNo(m.alive, "alive", "expired"), el("td", age(m.lease_age_s), "num"),
      el("td", m.topic_count, "num"), el("td", m.holds_private ? "holder" : "standby", m.holds_private ? "ok" : "none"),
      yesNo(m.healthy, "up", "down"),
    ], {"data-worker": m.worker_id, "data-alive": String(m.alive)})));

  fill(document.getElementById("sockets"),
    ["socket", "connected", "authenticated", "topics", "failed", "last message", "reconnects"],
    Object.entries(worker.sockets).sort().map(([name, s]) => row([
      el("td", name),
      idle(s) ? el("td", "idle (no topics wanted)", "none") : yesNo(s.connected, "connected", "disconnected"),
      idle(s) ? el("td", "n/a", "none") : yesNo(s.authenticated, "authenticated", "not authenticated"),
      el("td", (s.topics ?? 0) + " / " + (s.wanted ?? 0), "num"),
      el("td", s.failed_topics ?? 0, "num " + (s.failed_topics ? "bad" : "")),
      el("td", age(s.last_message_age_s), "num"), el("td", s.reconnects ?? 0, "num"),
    ], {"data-socket": name, "data-connected": String(Boolean(s.connected))})));

  fill(document.getElementById("topics"), ["endpoint", "topic", "status", "subscribers"],
    status.topics.map(t => {
      const services = el("td");
      t.services.forEach(s => services.appendChild(badge(s.service + " (" + s.status + ")", s.status === "active")));
      return row([el("td", t.endpoint), el("td", t.topic), cell(badge(t.status, t.status === "active")), services],
        {"data-topic": t.topic, "data-status": t.status});
    }));
  if (status.topics_truncated) document.getElementById("topics").appendChild(row([el("td", "(more not shown)")]));

  const p = worker.publisher;
  document.getElementById("publisher").replaceChildren(
    badge(p.connected === undefined ? "no report" : p.connected ? "RabbitMQ connected" : "RabbitMQ disconnected",
      p.connected === undefined ? null : p.connected),
    el("span", "market buffer " + (p.market_depth ?? "n/a") + ", account buffer " + (p.account_depth ?? "n/a") +
      ", unconfirmed " + (p.unconfirmed ?? "n/a") + ", reconnects " + (p.reconnects ?? "n/a")));
  fill(document.getElementById("drops"), ["cause", "dropped"],
    Object.entries(p.dropped || {}).sort().map(([cause, n]) => row([el("td", cause), el("td", n, "num " +
      (n ? "bad" : "ok"))])));

  const counters = Object.assign({}, worker.counters);  // the publisher's totals count messages too
  Object.entries(p.published || {}).forEach(([kind, n]) => { counters["published:" + kind] = n; });
  if (worker.heartbeat_ms && (!previous || worker.heartbeat_ms > previous.ms)) {
    if (previous) {
      const seconds = (worker.heartbeat_ms - previous.ms) / 1000;
      rates = {};
      Object.entries(counters).forEach(([name, n]) => {
        const before = previous.counters[name] ?? 0;
        if (n >= before) rates[name] = (n - before) / seconds;  // a restarted worker starts from zero
      });
    }
    previous = {ms: worker.heartbeat_ms, counters: counters};
  }
  fill(document.getElementById("rates"), ["counter", "total", "per second"],
    Object.entries(counters).sort().map(([name, n]) => row([el("td", name), el("td", n, "num"),
      el("td", name in rates ? rates[name].toFixed(1) : "…", "num")], {"data-counter": name})));
}

async function poll() {
  try {
    const response = await fetch("status.json", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch (error) {
    const overall = document.getElementById("overall");
    overall.textContent = "status.json unreachable"; overall.className = "badge bad";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}
poll();
</script>
</body>
</html>
"""
