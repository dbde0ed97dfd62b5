"""The dispatcher: claims due messages, sends each at its paced slot, records what Meta said.

When can a message be sent twice? Only if a worker dies after Meta accepted the
message and before the outcome commits, or cannot reach its database for longer
than the lease: the lease then ends and another worker sends it again. A worker
that cannot record an outcome retries the record, never the send, for as long as
it lives; and a message whose lease ended MAX_REAPS times fails (see the queue)
instead of being sent again and again. Between live workers a message is never
sent twice: a claim moves it to `sending` under the claimer's name and every
outcome is written only `WHERE lease_owner = <that worker>`.

Meta's throughput tier of a number is looked up in the background: a slow or dead
upstream for one number never delays the claims of the others.

How a worker learns of work: it does not poll every number. The accept path rings
its `WorkBell` (in process; across processes, PostgreSQL's LISTEN/NOTIFY rings it
too), a retry or a hold sets a timer for its due time, and one query
(`Queue.waiting`) every `poll_s` finds the numbers with queued messages and when
each is next due: it catches what no bell announced (another SQLite process, a
reaped lease, a lost notification). Between those, an idle number costs nothing.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from wagate.domain.delivery import EXPIRED_DETAILS, Claimed, Outcome, UpstreamResult, Waiting
from wagate.domain.errors import (
    MESSAGE_EXPIRED,
    NETWORK_ERROR,
    SOMETHING_WENT_WRONG,
    kind_of,
)
from wagate.domain.model import PhoneNumber
from wagate.domain.pacing import SendWindow, to_micros, to_seconds, window_limit
from wagate.domain.requests import MarketingMessageRequest
from wagate.domain.retry import DEFAULT_RETRY_POLICY, RetryPolicy, decide
from wagate.domain.sanitise import usable_wamid
from wagate.ports import Clock, Queue, Upstream

log = logging.getLogger("wagate.dispatch")

_decoder = msgspec.json.Decoder(MarketingMessageRequest)
_encoder = msgspec.json.Encoder()


# A worker whose loop has not turned for this many poll periods (at least
# HEARTBEAT_MIN_S) is not alive: its loop turns at least once per poll period.
HEARTBEAT_POLLS = 5
HEARTBEAT_MIN_S = 5.0

TIER_TTL_S = 600.0
# After a failed tier lookup, ask again this much later (the last known tier stays).
TIER_RETRY_S = 60.0
# A number whose upstream cannot be reached is warned of at once, then at most once
# per this many seconds (with the count of failed sends between): a dead upstream
# must be seen, not flood the log.
UNREACHABLE_WARNING_S = 60.0
# The setting that names each upstream kind's address, for the warning's hint.
UPSTREAM_SETTING = {"meta": "WAGATE_META_BASE_URL", "sandbox": "WAGATE_SANDBOX_URL"}


def upstream_payload(stored_request: str, recipient: str) -> bytes:
    """The body for Meta: the request as accepted, with the fields Meta's v23 schema requires.

    `to` goes as `recipient`, the message's address normalised at accept: the E.164
    digits the client was answered as `wa_id`, not as typed (`+44 7700 900123`,
    `0044...`), as Meta reads digits without a `+` or `00` prefix. The stored request
    keeps what the client typed, so idempotency is unchanged.
    """
    request = _decoder.decode(stored_request)
    template = request.template
    language = msgspec.structs.replace(template.language, policy="deterministic")
    return _encoder.encode(
        msgspec.structs.replace(
            request,
            recipient_type="individual",
            to=None if request.to is None else recipient,
            template=msgspec.structs.replace(template, language=language),
        )
    )


def worker_name() -> str:
    """A name unique to this worker process: host, pid and a random tag."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{random.getrandbits(24):06x}"


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """How a worker claims and sends."""

    graph_version: str = "v23.0"
    lease_s: float = 60.0
    # How far ahead a worker books send slots; small keeps pacing shared fairly.
    horizon_s: float = 0.5
    # The fallback look at every number with queued work (see the module's docstring).
    poll_s: float = 1.0
    # After a claim that found nothing (another worker booked the number's pace, or took
    # the messages), try again this much later, doubling up to the horizon; then the
    # bell, a timer or the look brings the number back.
    claim_retry_s: float = 0.05
    max_claim: int = 500
    # Claims of different numbers in flight at once: 1 where the database serialises
    # writes (SQLite: they would only queue for its lock), more where rows lock apart.
    claim_concurrency: int = 1
    housekeeping_s: float = 2.0
    retry: RetryPolicy = DEFAULT_RETRY_POLICY
    # Backoff of an outcome's record that failed (the database was unavailable).
    record_retry_s: float = 0.5
    record_retry_max_s: float = 30.0


class WorkBell:
    """Wakes an idle worker: a number has new work (`notify`), or anything may have (`ring`).

    The accept path of this process rings it after each commit; a listener for other
    processes (PostgreSQL NOTIFY) too. Ringing never blocks and never fails.
    """

    def __init__(self) -> None:
        self._numbers: set[str] = set()
        self._everything = False
        self._rung = asyncio.Event()

    def notify(self, phone_number_id: str) -> None:
        """A message of this number was committed to the queue."""
        self._numbers.add(phone_number_id)
        self._rung.set()

    def notify_all(self) -> None:
        """Work may have come unannounced (a listener reconnected): look at every number."""
        self._everything = True
        self._rung.set()

    def ring(self) -> None:
        """Wake the worker to look at its timers again (or at its stop event)."""
        self._rung.set()

    def take(self) -> tuple[set[str], bool]:
        """The numbers notified since the last take, and whether to look at every number."""
        numbers, everything = self._numbers, self._everything
        self._numbers, self._everything = set(), False
        self._rung.clear()
        return numbers, everything

    async def wait(self) -> None:
        """Until the bell rings (at once if it rang since the last take)."""
        await self._rung.wait()


class UnreachableWarnings:
    """Says loudly that a number's upstream cannot be reached (connection refused, timeout):
    at the first failure, then at most once per `every_s` with the failures counted."""

    def __init__(self, clock: Clock, every_s: float = UNREACHABLE_WARNING_S) -> None:
        self.clock = clock
        self.every_s = every_s
        # Per number: when it was last warned of, and the failures since.
        self._warned_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}

    def failed(self, number: PhoneNumber, base_url: str, details: str | None) -> bool:
        """One send could not reach the upstream; True if this one was warned of."""
        phone_number_id = number.phone_number_id
        failures = self._failures.get(phone_number_id, 0) + 1
        now = self.clock.now()
        warned_at = self._warned_at.get(phone_number_id)
        if warned_at is not None and now - warned_at < self.every_s:
            self._failures[phone_number_id] = failures
            return False
        self._warned_at[phone_number_id] = now
        self._failures[phone_number_id] = 0
        since = "" if warned_at is None else f" in the last {now - warned_at:.0f} s"
        log.warning(
            "UPSTREAM UNREACHABLE: number %s cannot reach %s (%s); %d send(s) failed%s, "
            "its messages stay queued and are retried; check %s",
            phone_number_id,
            base_url,
            details or "no answer",
            failures,
            since,
            UPSTREAM_SETTING.get(number.upstream, "the upstream's URL"),
        )
        return True

    def reached(self, number: PhoneNumber, base_url: str) -> None:
        """A send reached the upstream: say so if it had been unreachable."""
        phone_number_id = number.phone_number_id
        if self._warned_at.pop(phone_number_id, None) is None:
            return
        unwarned = self._failures.pop(phone_number_id, 0)
        log.warning(
            "number %s reaches %s again (%d more failed send(s) since the last warning)",
            phone_number_id,
            base_url,
            unwarned,
        )


class Dispatcher:
    """One worker: its loop claims, its tasks send, the queue records outcomes."""

    def __init__(
        self,
        queue: Queue,
        upstream: Upstream,
        clock: Clock,
        base_url_for: Callable[[PhoneNumber], str],
        settings: DispatchSettings | None = None,
        *,
        owner: str | None = None,
        rng: random.Random | None = None,
        bell: WorkBell | None = None,
    ) -> None:
        self.queue = queue
        self.upstream = upstream
        self.clock = clock
        self.base_url_for = base_url_for
        self.settings = settings or DispatchSettings()
        self.owner = owner or worker_name()
        self.rng = rng or random.Random()
        self.bell = bell or WorkBell()
        self._tasks: set[asyncio.Task[None]] = set()
        # The numbers seen with work (their tokens and upstreams), refreshed by every look.
        self._numbers: dict[str, PhoneNumber] = {}
        # When to try a claim next, per number believed to have due work; idle ones are absent.
        self._next_try: dict[str, float] = {}
        # Timers: when a number's earliest queued message comes due (from a look, a retry
        # or a hold). A claim's plans never erase them.
        self._due_at: dict[str, float] = {}
        # Claims in a row that found nothing, per number (for the retry's back-off).
        self._misses: dict[str, int] = {}
        # Where this worker's round robin over the numbers is (see `_turns`).
        self._claimed_last: str | None = None
        self._look_at = -1e18
        self._housekeeping_at = -1e18
        # The last slot this worker booked per number: no need to ask for more
        # while it is still far ahead (another worker may have booked beyond it).
        self._booked_until: dict[str, float] = {}
        self._next_local: dict[str, float] = {}
        # Each sending number's latest send times: no second carries more than its rate.
        self._windows: dict[str, SendWindow] = {}
        # Meta's throughput tier per number (msg/s) and when to ask again; at most
        # one lookup in flight per number.
        self._tiers: dict[str, tuple[int | None, float]] = {}
        self._tier_lookups: dict[str, asyncio.Task[None]] = {}
        self.unreachable = UnreachableWarnings(clock)
        self.sent = 0
        # When the loop last turned (clock time); readiness reads it (`alive`).
        self.heartbeat = -math.inf

    def alive(self, now: float) -> bool:
        """Whether the loop turned lately: it turns at least once per poll period, idle or not."""
        stale_after = max(HEARTBEAT_POLLS * self.settings.poll_s, HEARTBEAT_MIN_S)
        return now - self.heartbeat <= stale_after

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then let in-flight sends finish."""
        log.info("worker %s started", self.owner)
        stopping = asyncio.create_task(stop.wait())
        stopping.add_done_callback(lambda _: self.bell.ring())
        while not stop.is_set():
            self.heartbeat = self.clock.now()
            try:
                await self.run_once()
            except Exception:
                log.exception("worker %s: claim round failed; retrying", self.owner)
            await self._idle()
        self.heartbeat = -math.inf
        await stopping
        await self.drain()
        log.info("worker %s stopped", self.owner)

    async def _idle(self) -> None:
        """Wait for the bell, or until the next timer, look or housekeeping is due."""
        wake_at = min(
            self._look_at,
            self._housekeeping_at + self.settings.housekeeping_s,
            *self._next_try.values(),
            *self._due_at.values(),
        )
        delay = wake_at - self.clock.now()
        if delay <= 0:
            await asyncio.sleep(0)  # let the sends and the accepts run
            return
        timer = asyncio.ensure_future(self.clock.sleep(delay))
        rung = asyncio.ensure_future(self.bell.wait())
        try:
            await asyncio.wait((timer, rung), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            rung.cancel()

    async def drain(self) -> None:
        """Wait for the sends already started; stop looking up tiers."""
        lookups = list(self._tier_lookups.values())
        for lookup in lookups:
            lookup.cancel()
        await asyncio.gather(*lookups, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run_once(self) -> int:
        """One round: housekeeping and a look when due, then a claim per number whose time
        has come (notified, timed, or booked nearly to its end). Returns messages claimed."""
        now = self.clock.now()
        if now - self._housekeeping_at >= self.settings.housekeeping_s:
            self._housekeeping_at = now
            if await self.queue.reap_leases(now):
                self._look_at = now  # requeued messages: look for them at once
            expired = await self.queue.expire(now)
            if expired:
                log.info("expired %d messages past their TTL", expired)
            await self.queue.reconcile(now)
            now_us = to_micros(now)
            self._windows = {
                number: window
                for number, window in self._windows.items()
                if not window.idle_since(now_us)
            }
        notified, everything = self.bell.take()
        if everything or not notified.issubset(self._numbers):
            self._look_at = now
        for phone_number_id in notified:
            # Not before this worker's booked slots run low: under a stream of accepts
            # the bell rings for every commit, and a claim per ring would take SQLite's
            # write lock from the accepts for nothing (the number has no room yet).
            self._next_try[phone_number_id] = min(
                self._next_try.get(phone_number_id, math.inf),
                self._not_before(phone_number_id, now),
            )
            self._misses.pop(phone_number_id, None)
        if now >= self._look_at:
            await self._look(now)
        for phone_number_id, at in list(self._due_at.items()):
            if at <= now:
                del self._due_at[phone_number_id]
                self._next_try[phone_number_id] = now
                self._misses.pop(phone_number_id, None)
        due = self._turns(self.clock.now())
        if self.settings.claim_concurrency > 1:
            return await self._claim_each(due)
        total = 0
        for phone_number_id in due:
            total += await self._claim(phone_number_id)
            self._claimed_last = phone_number_id
        return total

    async def _claim_each(self, numbers: list[str]) -> int:
        """Claim these numbers, up to `claim_concurrency` at once, in round-robin order.

        With a thousand numbers due, one claim after the other made a round take
        seconds (each is a transaction), and a fast number waited a whole round for
        its next few slots. Claims of different numbers lock different rows, so on a
        database with row locks they run side by side.
        """
        gate = asyncio.Semaphore(self.settings.claim_concurrency)

        async def one(phone_number_id: str) -> int:
            async with gate:
                claimed = await self._claim(phone_number_id)
                self._claimed_last = phone_number_id
                return claimed

        results = await asyncio.gather(*(one(n) for n in numbers), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(result for result in results if isinstance(result, int))

    def _turns(self, now: float) -> list[str]:
        """The numbers due for a claim at `now`, in order of phone_number_id from just after
        the last one this worker claimed, round and round (its first round starts at random).

        Round robin: a round over many numbers takes a while, and a round that always
        started at the same number would serve the first ones again and again before
        the last. Starting each worker somewhere else keeps workers that share the
        numbers off each other: in step, each would wait on the others' lock of the
        same number's row and then find its pace booked. Only the due numbers are
        sorted: the loop turns at every accept's bell.
        """
        due = sorted(number for number, at in self._next_try.items() if at <= now)
        if not due:
            return due
        if self._claimed_last is None:
            start = self.rng.randrange(len(due))
        else:
            start = bisect.bisect_right(due, self._claimed_last)
        return due[start:] + due[:start]

    async def _look(self, now: float) -> None:
        """Which numbers have queued work, and when each is next due (one query)."""
        self._look_at = now + self.settings.poll_s
        waiting: list[Waiting] = await self.queue.waiting()
        next_try: dict[str, float] = {}
        # Numbers idle at this look are forgotten: the next bell for one brings a look
        # that reads it afresh, so a rotated token or a new mps is used within a poll,
        # even by a number whose messages never wait long enough for a look to see them.
        self._numbers = {work.number.phone_number_id: work.number for work in waiting}
        for work in waiting:
            phone_number_id = work.number.phone_number_id
            if work.due > now:
                self._due_at[phone_number_id] = work.due
                continue
            next_try[phone_number_id] = max(work.due, self._not_before(phone_number_id, now))
        self._next_try = next_try
        self._misses = {n: m for n, m in self._misses.items() if n in next_try}

    def _not_before(self, phone_number_id: str, now: float) -> float:
        """When a claim for this number could find room: once its booked slots run low."""
        return max(now, self._booked_until.get(phone_number_id, 0.0) - self.settings.horizon_s / 2)

    async def _claim(self, phone_number_id: str) -> int:
        """Claim a number's due messages and start their sends; plan its next try."""
        number = self._numbers.get(phone_number_id)
        if number is None:  # notified, but its work was gone by the look
            del self._next_try[phone_number_id]
            return 0
        now = self.clock.now()
        self._next_try[phone_number_id] = now + self._retry_after(phone_number_id)
        try:
            claimed = await self.queue.claim(
                phone_number_id,
                self.owner,
                now,
                tier_mps=self._tier(number, now),
                lease_s=self.settings.lease_s,
                horizon_s=self.settings.horizon_s,
                limit=self.settings.max_claim,
            )
        except Exception:
            self._missed(phone_number_id, now)  # back off while the database is away
            raise
        if not claimed:
            self._missed(phone_number_id, now)
            return 0
        self._misses.pop(phone_number_id, None)
        last = claimed[-1]
        self._booked_until[phone_number_id] = last.slot
        if len(claimed) < self.settings.max_claim and (
            last.slot + 2 * last.interval <= now + self.settings.horizon_s
        ):
            # Neither the limit nor the pace stopped the claim (a pace that stops it leaves
            # its last slot within an interval of the horizon's end; the second interval
            # is a margin), so it took every due message. More will ring the bell, or
            # come due at a time a look finds.
            del self._next_try[phone_number_id]
        else:
            self._next_try[phone_number_id] = last.slot - self.settings.horizon_s / 2
        for message in claimed:
            at = self._local_slot(phone_number_id, message)
            task = asyncio.create_task(self._send_at(number, message, at))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    def _retry_after(self, phone_number_id: str) -> float:
        return self.settings.claim_retry_s * 2.0 ** self._misses.get(phone_number_id, 0)

    def _missed(self, phone_number_id: str, now: float) -> None:
        """A claim found nothing: try again soon, then less often, then leave it to the look."""
        delay = self._retry_after(phone_number_id)
        # Other workers book at most a horizon ahead: past that, nothing was due.
        if delay > self.settings.horizon_s:
            del self._next_try[phone_number_id]
            self._misses.pop(phone_number_id, None)
            # Its messages may have been put off to their recipients' turns (pair
            # pacing): one look finds when the number is next due and sets a timer.
            self._look_at = min(self._look_at, now)
            return
        self._misses[phone_number_id] = self._misses.get(phone_number_id, 0) + 1
        self._next_try[phone_number_id] = now + delay

    def _wake_at(self, phone_number_id: str, at: float) -> None:
        """A message of this number comes due at `at` (a retry, a hold): claim then."""
        self._due_at[phone_number_id] = min(at, self._due_at.get(phone_number_id, at))
        self.bell.ring()

    def _tier(self, number: PhoneNumber, now: float) -> int | None:
        """Meta's throughput tier of a number as last known (None until known).

        The rate never goes above it. Past its time a lookup starts in the background,
        so a claim never waits on the upstream.
        """
        phone_number_id = number.phone_number_id
        known = self._tiers.get(phone_number_id)
        if (known is None or now >= known[1]) and phone_number_id not in self._tier_lookups:
            lookup = asyncio.create_task(self._look_up_tier(number, known))
            self._tier_lookups[phone_number_id] = lookup
        return None if known is None else known[0]

    async def _look_up_tier(
        self, number: PhoneNumber, known: tuple[int | None, float] | None
    ) -> None:
        phone_number_id = number.phone_number_id
        try:
            tier = await self.upstream.throughput(
                self.base_url_for(number),
                self.settings.graph_version,
                phone_number_id,
                number.access_token or "sandbox",
            )
            self._tiers[phone_number_id] = (tier, self.clock.now() + TIER_TTL_S)
        except Exception as exc:
            log.warning("throughput tier of %s unknown: %s", phone_number_id, exc)
            last = None if known is None else known[0]
            self._tiers[phone_number_id] = (last, self.clock.now() + TIER_RETRY_S)
        finally:
            del self._tier_lookups[phone_number_id]

    def _local_slot(self, phone_number_id: str, message: Claimed) -> float:
        """The booked slot, or later if this worker is behind: never a burst of late sends.

        A claim that took long (or a pause of the process) leaves slots in the past;
        sending all of them at once would exceed the rate, so they are spaced again.
        """
        at = max(message.slot, self._next_local.get(phone_number_id, 0.0))
        self._next_local[phone_number_id] = at + message.interval
        return at

    async def _send_at(self, number: PhoneNumber, message: Claimed, at: float) -> None:
        try:
            await self.clock.sleep(at - self.clock.now())
            await self._window_turn(number.phone_number_id, message.interval)
            outcome = await self.send(number, message)
        except Exception:
            # The lease will end and another round will pick the message up again.
            log.exception("send of %s failed; it is retried after its lease", message.id)
            return
        await self.record(outcome, message.id)

    async def _window_turn(self, phone_number_id: str, interval: float) -> None:
        """Wait until the number's last second of sends leaves room for one more; take it."""
        limit = window_limit(interval)
        window = self._windows.get(phone_number_id)
        if window is None:
            window = self._windows[phone_number_id] = SendWindow(limit)
        else:
            window.resize(limit)
        while True:
            now = to_micros(self.clock.now())
            earliest = window.earliest(now)
            if earliest <= now:
                window.record(now)
                return
            await self.clock.sleep(to_seconds(earliest - now))

    async def record(self, outcome: Outcome, message_id: str) -> None:
        """Commit an outcome, retrying the write (never the send) until it lands."""
        delay = self.settings.record_retry_s
        while True:
            try:
                await self.queue.record(outcome)
                return
            except Exception as exc:
                log.warning(
                    "outcome of %s not recorded (%s); recording it again in %.1f s",
                    message_id,
                    type(exc).__name__,
                    delay,
                )
            await self.clock.sleep(delay)
            delay = min(delay * 2, self.settings.record_retry_max_s)

    async def send(self, number: PhoneNumber, message: Claimed) -> Outcome:
        """Send one claimed message and decide what becomes of it."""
        now = self.clock.now()
        now_ms = int(now * 1000)
        if now_ms > message.expires_at:
            kind = kind_of(MESSAGE_EXPIRED)
            return Outcome(
                message.seq,
                self.owner,
                "failed",
                now_ms,
                error_code=MESSAGE_EXPIRED,
                error_title=kind.title,
                error_details=EXPIRED_DETAILS,
            )
        base_url = self.base_url_for(number)
        result = await self.upstream.send(
            base_url,
            self.settings.graph_version,
            number.phone_number_id,
            number.access_token or "sandbox",
            upstream_payload(message.request, message.recipient),
        )
        done_ms = int(self.clock.now() * 1000)
        if result.error_code == NETWORK_ERROR:
            self.unreachable.failed(number, base_url, result.error_details)
        else:
            self.unreachable.reached(number, base_url)
        if result.ok:
            self.sent += 1
            if message.attempts > 1:  # its earlier attempts were logged: say how it ended
                log.info(
                    "message %s (number %s, attempt %d): accepted upstream as %s",
                    message.id,
                    number.phone_number_id,
                    message.attempts,
                    result.wamid,
                )
            return Outcome(
                message.seq,
                self.owner,
                "forwarded",
                done_ms,
                wamid=self._storable_wamid(message, result.wamid),
                upstream_status=result.message_status,
            )
        return await self._failed(number, message, result, done_ms)

    def _storable_wamid(self, message: Claimed, wamid: str | None) -> str | None:
        """Meta's wamid, or None if it is absurd: the message was sent all the same.

        Not truncated: a cut wamid would match no status of Meta's (they carry the
        whole one, which ingest refuses too) and could collide with another.
        """
        if usable_wamid(wamid):
            return wamid
        log.warning(
            "Meta accepted %s with an unusable wamid (%d characters); recorded without it",
            message.id,
            len(wamid or ""),
        )
        return None

    async def _failed(
        self, number: PhoneNumber, message: Claimed, result: UpstreamResult, at_ms: int
    ) -> Outcome:
        code = result.error_code if result.error_code is not None else SOMETHING_WENT_WRONG
        decision = decide(message.attempts, code, result.http_status, self.rng, self.settings.retry)
        said = (
            f"message {message.id} (number {number.phone_number_id}, attempt {message.attempts}):"
            f" upstream error {code} {result.error_title or ''}"
            + (f" (HTTP {result.http_status})" if result.http_status else "")
            + f": {result.error_details or '-'}"
        )
        if decision is None:
            log.info("%s; failed, not retried", said)
            return Outcome(
                message.seq,
                self.owner,
                "failed",
                at_ms,
                error_code=code,
                error_title=result.error_title,
                error_details=result.error_details,
            )
        due_ms = at_ms + int(decision.delay * 1000)
        log.info(
            "%s; retry in %.1f s%s",
            said,
            decision.delay,
            {"number": ", the number slowed down", "recipient": ", the recipient held"}.get(
                decision.scope, ""
            ),
        )
        if decision.scope == "number":
            await self.queue.throttle(number.phone_number_id, at_ms / 1000)
        elif decision.scope == "recipient":
            await self.queue.hold_recipient(number.phone_number_id, message.recipient, due_ms)
        self._wake_at(number.phone_number_id, due_ms / 1000)
        return Outcome(
            message.seq,
            self.owner,
            "retry",
            at_ms,
            error_code=code,
            error_title=result.error_title,
            error_details=result.error_details,
            due_at_ms=due_ms,
        )
