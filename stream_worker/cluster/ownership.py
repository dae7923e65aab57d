"""This worker's place in the cluster: which public topics and whether the private stream are its to serve.

Renews the membership lease on a timer, adopts each renewal's view of the live members (rendezvous
assignment) and of the private lease, and tells the worker to converge when its share changed, without
waiting for that convergence (which may wait on RabbitMQ): a renewal is never late because a bind is slow. When
PostgreSQL cannot be reached it keeps the share it has (fail static): during an outage two workers may
serve a topic, which consumers absorb by `event_id`, but no topic and no account event is left unserved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from loguru import logger

from shared.enums import Endpoint
from shared.heartbeat import ClusterHealth
from stream_worker.cluster.assignment import Assignment, TopicKey
from stream_worker.cluster.handover import Handover, hand_over
from stream_worker.cluster.membership import ClusterView, MembershipStore, PrivateLease
from stream_worker.state.persistence import DATABASE_ERRORS


class Cluster:
    def __init__(
        self,
        store: MembershipStore,
        *,
        renew_interval: float,
        can_serve_private: bool,
        on_change: Callable[[], None],
        on_private_acquired: Callable[[PrivateLease], None],
        last_private_frame_ms: Callable[[], int | None],
        subscribed: Callable[[], dict[Endpoint, frozenset[str]]],
        hold_first_view: bool = True,
        handover_grace: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.worker_id = store.worker_id
        self._renew_interval = renew_interval
        self._can_serve_private = can_serve_private
        self._on_change = on_change
        self._on_private_acquired = on_private_acquired
        self._last_private_frame_ms = last_private_frame_ms
        self._hold_first_view = hold_first_view
        self._subscribed = subscribed
        # A topic moving to a newcomer is kept until the newcomer reports it subscribed, and at least this long;
        # at most `_handover_cap`, so a newcomer that cannot subscribe it does not leave it doubled forever.
        self._handover_grace = 2 * renew_interval if handover_grace is None else handover_grace
        self._handover_cap = max(30.0, 10 * renew_interval)
        self._clock = clock
        self._served: set[TopicKey] = set()
        self._releasing: dict[TopicKey, float] = {}  # topics kept while their new owner claims them: since when
        self._sleep = sleep
        self.assignment = Assignment(self.worker_id)
        self.ready = False  # until the first renewal, this worker owns nothing
        self.holds_private = False
        self.view: ClusterView | None = None
        self.renewals = 0
        self.failed_renewals = 0
        self.changes = 0  # views that moved topics or the private stream to or from this worker
        self._failing = False
        self.twins: set[str] = set()  # instance ids of other processes found renewing our worker id
        self._owned: dict[str, list[str]] = {}
        self._reported: dict[str, list[str]] | None = None

    def owned(self, topics: dict[Endpoint, set[str]]) -> dict[Endpoint, set[str]]:
        """Of the wanted topics, those this worker serves now. A read: it changes nothing (see `claim`)."""
        return self._ownership(topics).owned

    def owns(self, endpoint: Endpoint, topic: str) -> bool:
        """Whether this worker is, under its current view, the one to serve a Bybit topic (wanted or not): the
        rendezvous owner of a public topic, the private lease holder for a private one. A read."""
        if not self.ready:
            return False
        if endpoint is Endpoint.PRIVATE:
            return self.holds_private
        return self.assignment.owner(endpoint, topic) == self.worker_id

    def claim(self, topics: dict[Endpoint, set[str]]) -> dict[Endpoint, set[str]]:
        """As `owned`, and remember the answer as what we serve: the convergence calls this before it applies
        the topics, so a later handover knows what we had."""
        handover = self._ownership(topics)
        self._releasing = handover.releasing
        self._served = {(endpoint, topic) for endpoint, served in handover.owned.items() for topic in served}
        self.assignment.forget({(e, t) for e, endpoint_topics in topics.items() for t in endpoint_topics})
        self._owned = {endpoint.value: sorted(owned) for endpoint, owned in sorted(handover.owned.items())}
        return handover.owned

    def _ownership(self, topics: dict[Endpoint, set[str]]) -> Handover:
        """Our rendezvous share of the public topics plus those still being handed over, and the private ones
        while we hold the private lease."""
        if not self.ready:
            return Handover(owned={}, releasing={})
        public: dict[Endpoint, set[str]] = {e: t for e, t in topics.items() if e is not Endpoint.PRIVATE}
        served = self.view.served if self.view is not None else None

        def taken(endpoint: Endpoint, topic: str) -> bool:
            owner = self.assignment.owner(endpoint, topic)
            return served is not None and (endpoint.value, topic) in served.get(owner or "", frozenset())

        handover = hand_over(
            public=public,
            share=self.assignment.mine(public),
            served=self._served,
            releasing=self._releasing,
            now=self._clock(),
            grace=self._handover_grace,
            cap=self._handover_cap,
            taken=taken,
        )
        if self.holds_private and topics.get(Endpoint.PRIVATE):
            handover.owned[Endpoint.PRIVATE] = set(topics[Endpoint.PRIVATE])
        return handover

    def _report(self) -> dict[str, list[str]]:
        """What we tell the others we serve: our topics that Bybit has acknowledged, so a worker handing a
        topic to us lets go of it only once we really have it."""
        subscribed = {endpoint.value: topics for endpoint, topics in self._subscribed().items()}
        report = {
            socket: [t for t in topics if t in subscribed.get(socket, ())] for socket, topics in self._owned.items()
        }
        return {socket: topics for socket, topics in report.items() if topics}

    async def run(self) -> None:
        while True:
            await self.renew()
            await self._sleep(self._renew_interval)

    async def renew(self) -> bool:
        """One renewal; True if it changed what this worker owns (and the worker was told to converge)."""
        report = self._report()
        topics = report if report != self._reported else None
        try:
            view = await self.store.renew(
                topics=topics,
                want_private=self._can_serve_private,
                last_frame_ms=self._last_private_frame_ms() if self.holds_private else None,
                read_served=bool(self._releasing),
            )
        except DATABASE_ERRORS as error:
            self.failed_renewals += 1
            if not self._failing:
                self._failing = True
                logger.bind(error=type(error).__name__).warning(
                    "cannot renew the membership lease; keeping the topics we serve until PostgreSQL answers"
                )
            return False
        if self._failing:
            self._failing = False
            logger.info("membership lease renewed again")
        self.renewals += 1
        if topics is not None:
            self._reported = topics
        changed = self._adopt(view)
        if not changed and self._releasing:
            self._on_change()  # a topic being handed over may be the newcomer's now: converge lets it go
        return changed

    def _adopt(self, view: ClusterView) -> bool:
        if self.renewals == 1 and self._hold_first_view:
            # Workers started together (a deploy, a restart) each join before seeing the others: claiming on
            # the first view would subscribe topics that move again a second later. One renewal of patience
            # lets them meet first.
            self.view = view
            return False
        first = not self.ready
        if view.twin is not None and not first and view.twin not in self.twins:
            self.twins.add(view.twin)  # logged once per twin: the two overwrite the row on every renewal
            logger.bind(worker_id=self.worker_id).error(
                "another running worker uses the same WS_GATEWAY_WORKER_ID: give each worker its own"
            )
        self.view = view
        # We renewed a moment ago, so we are live even if the clock edge says otherwise.
        moved = self.assignment.update(view.live | {self.worker_id})
        holds = view.holds_private(self.store.instance_id)
        acquired = holds and not self.holds_private
        handed = holds != self.holds_private
        if handed:
            lease = view.private
            if holds:
                logger.bind(epoch=lease.epoch if lease else None).info("took the private stream lease")
            else:
                logger.bind(holder=lease.holder if lease else None).info("the private stream lease moved away")
            self.holds_private = holds
        self.ready = True
        if moved and not first:
            logger.bind(members=sorted(self.assignment.members)).info("cluster membership changed")
        if not (first or moved or handed):
            return False
        self.changes += 1
        self._on_change()
        if acquired and view.private is not None:
            self._on_private_acquired(view.private)
        return True

    async def leave(self) -> None:
        """Hand our topics and the private stream over now rather than at our lease's expiry."""
        try:
            await self.store.leave(last_frame_ms=self._last_private_frame_ms() if self.holds_private else None)
        except DATABASE_ERRORS as error:
            logger.bind(error=type(error).__name__).warning("could not leave the cluster; our lease will expire")
            return
        logger.info("left the cluster")

    def health(self) -> ClusterHealth:
        lease = self.view.private if self.view is not None else None
        return ClusterHealth(
            ready=self.ready,
            members=sorted(self.assignment.members),
            holds_private=self.holds_private,
            private_holder=lease.holder if lease is not None and lease.expires_in_s > 0 else None,
            owned_topics={endpoint: len(topics) for endpoint, topics in self._owned.items()},
            handing_over=len(self._releasing),
            renewals=self.renewals,
            failed_renewals=self.failed_renewals,
            changes=self.changes,
            duplicate_worker_id=bool(self.twins),
        )

    @property
    def private_served_elsewhere(self) -> bool:
        """Another live worker holds the private stream (so this one's lack of keys is not the cluster's)."""
        lease = self.view.private if self.view is not None else None
        return lease is not None and lease.expires_in_s > 0 and lease.instance_id != self.store.instance_id
