"""The worker's view of cancelled subscriptions in PostgreSQL: read with the desired set, settled, aged out."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from shared.enums import Endpoint
from stream_worker.state.persistence import Store

INSERT = text(
    "INSERT INTO subscriptions (id, channel_type, category, symbol, topic, endpoint, requesting_service, "
    "is_active, cancelled_at) VALUES (:id, 'ticker', 'linear', 'BTCUSDT', 'tickers.BTCUSDT', 'linear', :service, "
    ":active, CASE WHEN :active THEN NULL ELSE now() - make_interval(hours => :hours_ago) END)"
)


async def add(store: Store, service: str, *, active: bool, hours_ago: int = 0) -> uuid.UUID:
    row_id = uuid.uuid4()
    async with store.engine.begin() as connection:
        await connection.execute(INSERT, {"id": row_id, "service": service, "active": active, "hours_ago": hours_ago})
    return row_id


async def test_tombstones_come_with_the_desired_set_and_leave_once_settled_or_a_day_old(store: Store) -> None:
    live = await add(store, "stays", active=True)
    recent = await add(store, "leaves", active=False, hours_ago=1)
    await add(store, "left-long-ago", active=False, hours_ago=25)

    desired, tombstones = await store.load_desired()
    assert desired.subscription_ids(Endpoint.LINEAR, "tickers.BTCUSDT") == [live]
    assert [t.subscription_id for t in tombstones] == [recent]  # a day-old one is given up, not applied
    assert tombstones[0].binding.service == "leaves"

    await store.settle_tombstones([recent])
    _, tombstones = await store.load_desired()
    assert tombstones == []
    async with store.engine.connect() as connection:
        unsettled = (
            await connection.execute(text("SELECT id FROM subscriptions WHERE tombstone_settled_at IS NULL"))
        ).scalars()
        assert set(unsettled) == {live}  # the aged-out one was settled with it; a live row is never a tombstone
