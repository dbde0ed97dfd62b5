"""The notifier: delivers the outbox of customer webhooks, retries, dead-letters, pauses.

Deliveries are written by the stores in the transaction that causes them (see
`domain.notifications`); the notifier only claims what is due, renders and POSTs
each, and records what the receiver said. The store gives it the oldest delivery of
each (endpoint, order_key), so a receiver never sees a message's `read` before its
`delivered`, while other messages' events flow beside a stuck one.

One transaction (`Notifications.settle`) records what was posted and leases what is
due: up to a window of `per_endpoint * window_factor` of one endpoint's deliveries,
counted across every notifier. The notifier posts from what it leased, at most
`per_endpoint` at once to one endpoint, while the next settle waits for the database:
on SQLite the write lock is shared with the sends and the ingest, and a cycle of claim,
POST and record per delivery made an endpoint's rate the window over that wait
(BENCHMARKS.md, "Issue 9"). Records of attempts that end close together share a settle.

When can a receiver get an event twice? When a notifier dies (or loses its database
for longer than the lease) after the POST and before its record: the lease ends and
another notifier posts it again, with the same id (`X-Idempotency-Key`, `webhook-id`)
for the receiver to drop. A record that fails is retried as a record, never as a POST.

How it learns of work: the paths that write deliveries ring its `NotifyBell` (in
process); a retry sets a timer for its due time; a claim every `poll_s` finds what
no bell announced (another process, a reaped lease, a resumed endpoint).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import heapq
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from wagate.core.dispatch import worker_name
from wagate.domain.notifications import (
    ATTEMPT_TIMEOUT_S,
    KEEP_ATTEMPTS_S,
    PAUSE_AFTER_S,
    AttemptRecord,
    ClaimedDelivery,
    DeliveryState,
    retry_delay,
)
from wagate.ports import Clock, Notifications, PostResult, WebhookPoster

log = logging.getLogger("wagate.notify")

# A leased delivery is posted only if its attempt can end this long before its lease.
LEASE_MARGIN_S = 5.0

# The wire format of a delivery: its body and headers (signed) at `now_s`.
Render = Callable[[ClaimedDelivery, float], tuple[bytes, dict[str, str]]]


def shown_url(url: str) -> str:
    """A URL as logs may show it: no credentials, query or fragment (they can hold tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    with contextlib.suppress(ValueError):  # an out-of-range port: show the URL without it
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """How a notifier claims, posts, records and keeps house."""

    # Deliveries claimed (and records written) in one transaction at most.
    batch: int = 500
    # Deliveries one notifier holds at once (leased: waiting for a POST, or posting).
    max_in_flight: int = 2000
    # POSTs in flight at once from one notifier: to one endpoint, and to all.
    per_endpoint: int = 32
    max_posts: int = 256
    # Deliveries of one endpoint leased at once across every notifier (the store counts),
    # as a multiple of `per_endpoint`: the POSTs of one endpoint go on from the leased
    # ones while their records and the next claim wait for the database (on SQLite, for
    # the write lock and its fsync behind the sends' and the ingest's commits).
    window_factor: int = 16
    # Longer than an attempt and its record: a live notifier never loses its lease.
    lease_s: float = 60.0
    poll_s: float = 1.0
    attempt_timeout_s: float = ATTEMPT_TIMEOUT_S
    # An endpoint failing without a success for this long is paused (0: never).
    pause_after_s: float = PAUSE_AFTER_S
    housekeeping_s: float = 5.0
    prune_every_s: float = 60.0
    keep_s: float = KEEP_ATTEMPTS_S
    prune_limit: int = 1000
    # Backoff of a record that failed (the database was unavailable).
    record_retry_s: float = 0.5
    record_retry_max_s: float = 30.0
    # How long a finished attempt may wait for others to share its record's transaction
    # (see `Notifier._queue_record`).
    coalesce_s: float = 0.01

    @property
    def window(self) -> int:
        """Deliveries of one endpoint leased at once, across every notifier."""
        return self.per_endpoint * self.window_factor


class NotifyBell:
    """Wakes an idle notifier: deliveries were written (or an endpoint resumed).

    The paths of this process that write deliveries ring it after their commit.
    Ringing never blocks and never fails.
    """

    def __init__(self) -> None:
        self._rung = asyncio.Event()

    def ring(self) -> None:
        """New deliveries may be due: claim now."""
        self._rung.set()

    def take(self) -> bool:
        """Whether it rang since the last take."""
        rung = self._rung.is_set()
        self._rung.clear()
        return rung

    async def wait(self) -> None:
        """Until the bell rings (at once if it rang since the last take)."""
        await self._rung.wait()


@dataclass(frozen=True, slots=True)
class _Leased:
    """A claimed delivery waiting for a POST slot of its endpoint."""

    delivery: ClaimedDelivery
    # Not posted after this (clock time): its lease would end before the attempt could.
    post_by: float


@dataclass(frozen=True, slots=True)
class _Attempt:
    """An attempt whose record is waiting to be written."""

    delivery: ClaimedDelivery
    record: AttemptRecord


class Notifier:
    """One notifier: its loop records what was posted and claims what is due (one
    transaction), its tasks post, up to `per_endpoint` at once to an endpoint, from the
    deliveries it holds."""

    def __init__(
        self,
        notifications: Notifications,
        poster: WebhookPoster,
        clock: Clock,
        render: Render,
        settings: NotifySettings | None = None,
        *,
        owner: str | None = None,
        rng: random.Random | None = None,
        bell: NotifyBell | None = None,
    ) -> None:
        self.notifications = notifications
        self.poster = poster
        self.clock = clock
        self.render = render
        self.settings = settings or NotifySettings()
        self.owner = owner or worker_name()
        self.rng = rng or random.Random()
        self.bell = bell or NotifyBell()
        self._tasks: set[asyncio.Task[None]] = set()
        # Leased deliveries waiting for a POST slot, by endpoint; POSTs out, by endpoint.
        self._queues: dict[str, collections.deque[_Leased]] = {}
        self._posting: dict[str, int] = {}
        # Endpoints with deliveries waiting while every one of `max_posts` is out.
        self._starved: collections.deque[str] = collections.deque()
        self._held = 0  # deliveries leased to this notifier and not yet recorded
        self.expired = 0  # leased deliveries not posted: their lease ran out waiting
        # Endpoints this notifier recorded a failure of since its last success there.
        self._marked_failing: set[str] = set()
        # Attempts done whose records wait for the next settle (records, then a claim).
        self._unrecorded: list[_Attempt] = []
        self._record_delay = self.settings.record_retry_s
        self._record_retry_at = -math.inf
        self._coalescing: asyncio.Future[None] | None = None
        # When retries this notifier decided come due (a heap of clock times).
        self._retries: list[float] = []
        self._poll_at = -math.inf
        self._housekeeping_at = -math.inf
        self._prune_at = -math.inf
        # The latest success recorded per endpoint: a failure claimed before it must not
        # pause the endpoint on the stale `failing_since` its claim carried.
        self._succeeded_at: dict[str, int] = {}
        self.delivered = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then let in-flight attempts finish and be recorded."""
        log.info("notifier %s started", self.owner)
        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _: self.bell.ring())
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("notifier %s: claim round failed; retrying", self.owner)
            await self._idle()
        await stopping
        self._forget_waiting()
        await self.drain()
        log.info("notifier %s stopped", self.owner)

    async def _idle(self) -> None:
        """Wait for the bell, the earliest retry, the next poll or housekeeping."""
        wake_at = min(
            self._poll_at,
            self._housekeeping_at + self.settings.housekeeping_s,
            self._retries[0] if self._retries else math.inf,
            self._record_retry_at if self._unrecorded else math.inf,
        )
        delay = wake_at - self.clock.now()
        if delay <= 0:
            await asyncio.sleep(0)  # let the attempts and their records run
            return
        timer = asyncio.ensure_future(self.clock.sleep(delay))
        rung = asyncio.ensure_future(self.bell.wait())
        try:
            await asyncio.wait((timer, rung), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            rung.cancel()

    async def drain(self) -> None:
        """Wait for the attempts already started and for their records to land."""
        while self._tasks or self._unrecorded:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            while self._unrecorded:
                delay = self._record_retry_at - self.clock.now()
                if delay > 0:
                    await self.clock.sleep(delay)
                await self._settle(0, self.clock.now())
        if self._coalescing is not None:
            self._coalescing.cancel()
            self._coalescing = None

    async def run_once(self) -> int:
        """Housekeeping when due, then record what finished and claim what is due, in one
        transaction, and start the claimed attempts.

        Returns the deliveries claimed.
        """
        now = self.clock.now()
        if now - self._housekeeping_at >= self.settings.housekeeping_s:
            self._housekeeping_at = now
            await self._keep_house(now)
        self.bell.take()
        while self._retries and self._retries[0] <= now:
            heapq.heappop(self._retries)
        if self._unrecorded and now < self._record_retry_at:
            return 0  # the database refused the last record: wait out its backoff
        self._poll_at = now + self.settings.poll_s
        room = min(self.settings.batch, self.settings.max_in_flight - self._held)
        claimed = await self._settle(max(room, 0), now)
        post_by = now + self.settings.lease_s - self.settings.attempt_timeout_s - LEASE_MARGIN_S
        touched: dict[str, None] = {}
        for delivery in claimed:
            endpoint_id = delivery.endpoint.id
            self._queues.setdefault(endpoint_id, collections.deque()).append(
                _Leased(delivery, post_by)
            )
            touched[endpoint_id] = None
        self._held += len(claimed)
        for endpoint_id in touched:
            self._pump(endpoint_id)
        if room > 0 and len(claimed) == room:
            self._poll_at = now  # the limit stopped the claim: more may be due
        return len(claimed)

    async def _settle(self, room: int, now: float) -> list[ClaimedDelivery]:
        """Record up to a batch of finished attempts and claim up to `room`, as one
        transaction. A record that fails is kept and written again after a backoff (the
        POST is never repeated); a claim alone that fails raises."""
        batch = self._unrecorded[: self.settings.batch]
        if not batch and room <= 0:
            return []
        try:
            claimed = await self.notifications.settle(
                [attempt.record for attempt in batch],
                self.owner,
                int(now * 1000),
                limit=room,
                per_endpoint=self.settings.window,
                lease_ms=int(self.settings.lease_s * 1000),
            )
        except Exception as exc:
            if not batch:
                raise
            log.warning(
                "%d webhook attempt(s) not recorded (%s); recording them again in %.1f s",
                len(batch),
                type(exc).__name__,
                self._record_delay,
            )
            self._record_retry_at = now + self._record_delay
            self._record_delay = min(self._record_delay * 2, self.settings.record_retry_max_s)
            return []
        del self._unrecorded[: len(batch)]
        self._held -= len(batch)
        self._record_delay = self.settings.record_retry_s
        self._record_retry_at = -math.inf
        if self._unrecorded:
            self.bell.ring()  # more than a batch waited: settle again at once
        await self._pause_failing(batch)
        return claimed

    # ---- POST slots ------------------------------------------------------------------

    def _pump(self, endpoint_id: str) -> None:
        """Start POSTs of an endpoint's waiting deliveries while it and the notifier have
        slots; a delivery whose lease would end during its attempt is left to be reaped
        (no POST happened: nothing is sent twice, and its key waits only for the reap)."""
        queue = self._queues.get(endpoint_id)
        if not queue:
            return
        posting = self._posting.get(endpoint_id, 0)
        now = self.clock.now()
        expired = 0
        while queue and posting < self.settings.per_endpoint:
            if len(self._tasks) >= self.settings.max_posts:
                if endpoint_id not in self._starved:
                    self._starved.append(endpoint_id)
                break
            leased = queue.popleft()
            if now > leased.post_by:
                self._held -= 1
                self.expired += 1
                expired += 1
                continue
            posting += 1
            task = asyncio.create_task(self._attempt(leased.delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(functools.partial(self._posted, endpoint_id))
        self._posting[endpoint_id] = posting
        if not queue:
            del self._queues[endpoint_id]
        if expired:
            log.info(
                "%d webhook deliveries to endpoint %s waited past their lease for a POST "
                "slot (a slow receiver); they go again once their lease ends",
                expired,
                endpoint_id,
            )

    def _posted(self, endpoint_id: str, _: object) -> None:
        """A POST ended: its slot goes to the endpoint's next delivery, or another's."""
        left = self._posting[endpoint_id] - 1
        if left:
            self._posting[endpoint_id] = left
        else:
            del self._posting[endpoint_id]
        self._pump(endpoint_id)
        while self._starved and len(self._tasks) < self.settings.max_posts:
            self._pump(self._starved.popleft())

    def _forget_waiting(self) -> None:
        """Stopping: leave the leased deliveries not yet posted to be reaped (their lease
        ends within `lease_s`; another notifier, or this one restarted, sends them)."""
        waiting = sum(len(queue) for queue in self._queues.values())
        if waiting:
            log.info(
                "notifier %s stopping: %d leased webhook deliveries not posted; "
                "they go again once their lease ends",
                self.owner,
                waiting,
            )
        self._held -= waiting
        self._queues.clear()
        self._starved.clear()

    async def _keep_house(self, now: float) -> None:
        """Free deliveries whose notifier died; prune old attempts once in a while."""
        now_ms = int(now * 1000)
        reaped = await self.notifications.reap_deliveries(now_ms)
        if reaped:
            log.info("%d webhook deliveries were leased to a notifier that stopped", reaped)
        if now < self._prune_at:
            return
        before_ms = now_ms - int(self.settings.keep_s * 1000)
        pruned = await self.notifications.prune_deliveries(before_ms, self.settings.prune_limit)
        # A full prune left more behind: go on at the next housekeeping, not a minute later.
        full = pruned >= self.settings.prune_limit
        self._prune_at = now if full else now + self.settings.prune_every_s

    async def _attempt(self, delivery: ClaimedDelivery) -> None:
        """Render and POST one delivery; queue its record (the POST is never repeated)."""
        try:
            body, headers = self.render(delivery, self.clock.now())
        except Exception:
            # Rendering is pure: what failed once fails every time. Dead-letter it
            # (a replay after the fix sends it) instead of retrying it for a day.
            log.exception("webhook %s (%s) could not be rendered", delivery.id, delivery.type)
            failed = _Answer(None, "the event could not be rendered", None, 0)
            self._queue_record(delivery, self._dead(delivery, failed, self._now_ms()))
            return
        started = self.clock.now()
        try:
            post: PostResult = await self.poster.post(
                delivery.endpoint.url, body, headers, self.settings.attempt_timeout_s
            )
        except Exception as exc:
            log.exception("webhook poster raised on %s; counted as a failed attempt", delivery.id)
            latency_ms = int((self.clock.now() - started) * 1000)
            post = _Answer(None, type(exc).__name__, None, latency_ms)
        self._queue_record(delivery, self._decide(delivery, post, self._now_ms()))

    def _decide(self, delivery: ClaimedDelivery, post: PostResult, at_ms: int) -> AttemptRecord:
        """What one attempt makes of its delivery: delivered on a 2xx, else retried or dead.

        A 3xx is a failure: redirects are not followed (the receiver's URL is the one
        the customer registered, and an open redirect must not reach inside).
        """
        if post.status_code is not None and 200 <= post.status_code < 300:
            self.delivered += 1
            self._told_delivered(delivery, post)
            return self._record_of(delivery, post, at_ms, "delivered")
        delay = retry_delay(delivery.attempts + 1, self.rng, post.retry_after_s)
        if delay is None:
            return self._dead(delivery, post, at_ms)
        due_ms = at_ms + int(delay * 1000)
        heapq.heappush(self._retries, due_ms / 1000)
        log.info(
            "webhook %s (%s) to endpoint %s, attempt %d: %s in %d ms; retry in %.0f s",
            delivery.id,
            delivery.type,
            delivery.endpoint.id,
            delivery.attempts + 1,
            _said(post),
            post.latency_ms,
            delay,
        )
        return self._record_of(delivery, post, at_ms, "pending", next_attempt_at=due_ms)

    def _dead(self, delivery: ClaimedDelivery, post: PostResult, at_ms: int) -> AttemptRecord:
        log.warning(
            "webhook %s (%s) to endpoint %s dead-lettered after %d attempts (last: %s); "
            "replay it once the receiver is fixed",
            delivery.id,
            delivery.type,
            delivery.endpoint.id,
            delivery.attempts + 1,
            _said(post),
        )
        return self._record_of(delivery, post, at_ms, "dead")

    def _told_delivered(self, delivery: ClaimedDelivery, post: PostResult) -> None:
        # Its failed attempts were logged at INFO: say at INFO how it ended too.
        level = logging.INFO if delivery.attempts else logging.DEBUG
        log.log(
            level,
            "webhook %s (%s) delivered to endpoint %s, attempt %d: HTTP %s in %d ms",
            delivery.id,
            delivery.type,
            delivery.endpoint.id,
            delivery.attempts + 1,
            post.status_code,
            post.latency_ms,
        )

    def _record_of(
        self,
        delivery: ClaimedDelivery,
        post: PostResult,
        at_ms: int,
        state: DeliveryState,
        *,
        next_attempt_at: int | None = None,
    ) -> AttemptRecord:
        error = post.error
        if error is None and post.status_code is not None and 300 <= post.status_code < 400:
            error = "redirect not followed"
        endpoint = delivery.endpoint
        if state == "delivered":
            failing = endpoint.failing_since is not None or endpoint.id in self._marked_failing
            self._marked_failing.discard(endpoint.id)
        else:
            failing = True
            self._marked_failing.add(endpoint.id)
        return AttemptRecord(
            delivery_seq=delivery.seq,
            endpoint_id=delivery.endpoint.id,
            owner=self.owner,
            at=at_ms,
            latency_ms=post.latency_ms,
            status_code=post.status_code,
            error=error,
            state=state,
            next_attempt_at=next_attempt_at,
            endpoint_failing=failing,
        )

    def _now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    # ---- records, in batches, retried until they land ------------------------------

    def _queue_record(self, delivery: ClaimedDelivery, record: AttemptRecord) -> None:
        """Keep a record for the next settle (records, then a claim, in one transaction).

        It runs at once when nothing else is out, when a quarter of a batch waits, or
        when fewer deliveries wait for a POST slot than are being posted (the next claim
        is needed soon); else after `coalesce_s`: attempts that end near each other share
        one transaction (on SQLite, one commit and its fsync).
        """
        self._unrecorded.append(_Attempt(delivery, record))
        waiting = len(self._unrecorded)
        out = len(self._tasks) - 1  # this attempt's own task is still counted
        queued = self._held - waiting - out
        if out <= 0 or waiting * 4 >= self.settings.batch or queued < out:
            self.bell.ring()
        elif self._coalescing is None:
            self._coalescing = asyncio.ensure_future(self._ring_after_coalescing())

    async def _ring_after_coalescing(self) -> None:
        try:
            await self.clock.sleep(self.settings.coalesce_s)
        finally:
            self._coalescing = None
        self.bell.ring()

    async def _pause_failing(self, batch: Sequence[_Attempt]) -> None:
        """Pause the endpoints of this batch that have failed for `pause_after_s`."""
        for attempt in batch:
            if attempt.record.state == "delivered":
                endpoint_id = attempt.record.endpoint_id
                at = max(attempt.record.at, self._succeeded_at.get(endpoint_id, attempt.record.at))
                self._succeeded_at[endpoint_id] = at
        looked: set[str] = set()
        for attempt in batch:
            endpoint = attempt.delivery.endpoint
            if attempt.record.state == "delivered" or endpoint.id in looked:
                continue
            looked.add(endpoint.id)
            since = self._failing_since(attempt)
            if since is None:
                continue
            try:
                paused = await self.notifications.pause_endpoint(
                    endpoint.id, attempt.record.at, attempt.record.at - self._pause_after_ms()
                )
            except Exception as exc:  # its next failure asks again
                log.warning("endpoint %s not paused (%s)", endpoint.id, type(exc).__name__)
                continue
            if paused:
                log.warning(
                    "webhook endpoint %s (%s) PAUSED: every attempt has failed for %.1f h; "
                    "its deliveries wait (nothing is lost) until it is resumed",
                    endpoint.id,
                    shown_url(endpoint.url),
                    (attempt.record.at - since) / 3_600_000,
                )

    def _pause_after_ms(self) -> int:
        return int(self.settings.pause_after_s * 1000)

    def _failing_since(self, attempt: _Attempt) -> int | None:
        """Since when the endpoint of a failed attempt has failed, if for long enough to pause.

        The endpoint as claimed carries `failing_since` as it was then (the store sets
        it at the first failure); a success this notifier recorded after it restarts
        the count.
        """
        pause_after_ms = self._pause_after_ms()
        since = attempt.delivery.endpoint.failing_since
        if pause_after_ms <= 0 or since is None:
            return None
        if self._succeeded_at.get(attempt.record.endpoint_id, -1) >= since:
            return None
        return since if attempt.record.at - since >= pause_after_ms else None


@dataclass(slots=True)
class _Answer:
    """A failed POST the notifier describes itself (the poster raised, rendering failed)."""

    status_code: int | None
    error: str | None
    retry_after_s: float | None
    latency_ms: int


def _said(post: PostResult) -> str:
    """What a failed attempt got, for the log: `HTTP 503`, `timeout`, `HTTP 302: ...`."""
    if post.status_code is None:
        return post.error or "no answer"
    return f"HTTP {post.status_code}" + (f": {post.error}" if post.error else "")


__all__ = ["Notifier", "NotifyBell", "NotifySettings", "Render", "shown_url"]
