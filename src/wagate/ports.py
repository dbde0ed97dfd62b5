"""The small protocols the core is written against; adapters implement them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

# Only annotations use them (postponed): importing the domain here cost every process,
# the CLI's `--help` included, ~150 ms.
if TYPE_CHECKING:
    from wagate.domain.delivery import Claimed, Outcome, UpstreamResult, Waiting
    from wagate.domain.model import (
        ApiKey,
        KeyOwner,
        MessageQuery,
        NewMessage,
        PhoneNumber,
        Project,
        StoredMessage,
    )
    from wagate.domain.notifications import (
        AttemptRecord,
        AttemptView,
        ClaimedDelivery,
        DeliveryState,
        DeliveryView,
        WebhookEndpoint,
    )
    from wagate.domain.statuses import (
        EventRow,
        IngestResult,
        PreferenceRow,
        StatusRow,
        TimelineEntry,
    )
    from wagate.domain.suppressions import Suppression
    from wagate.domain.template_events import TemplateUpdate
    from wagate.domain.templates import Template


class Clock(Protocol):
    """Where time comes from, so pacing, retries and TTLs are testable without sleeping."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait; a fake clock just moves on."""
        ...


class SystemClock:
    """The real clock. Pacing across machines assumes their clocks agree (NTP)."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Wait on the event loop."""
        await asyncio.sleep(max(0.0, seconds))


class IdempotencyConflict(Exception):
    """Another request committed the same idempotency key first."""


class PhoneNumberGone(Exception):
    """The message's phone number was removed between the door's check and the commit:
    nothing was stored."""


class StoreUnavailable(Exception):
    """The database could not commit (down, unreachable, timed out): nothing was stored.

    The store has logged the failure once for its whole batch; callers answer
    without logging again, and a retry of the same request is safe.
    """


# The store's side, one small port per consumer. The SQL adapters (SqlStore,
# SqlStatusStore, SqlQueue) and the in-memory one implement them under these very
# method names; tests/conformance checks both that they do and that they behave alike.


class Directory(Protocol):
    """Who an API key belongs to and which number an id names (core/access)."""

    async def find_project_by_key_hash(self, key_hash: str) -> KeyOwner | None:
        """The project (and its rate limit) of a live (not revoked) API key, by the key's hash."""
        ...

    async def get_phone_number(self, phone_number_id: str) -> PhoneNumber | None:
        """A phone number by its id."""
        ...


class Outbox(Protocol):
    """Where accepted messages are committed, once per idempotency key (core/accept)."""

    async def add_message(self, message: NewMessage) -> None:
        """Commit one message durably; return only once it is on disk (PhoneNumberGone if
        its number was removed meanwhile).

        Raises IdempotencyConflict if the project already has its idempotency key, and
        StoreUnavailable if the database could not commit (nothing was stored).
        """
        ...

    async def find_by_idempotency_key(self, project_id: str, key: str) -> StoredMessage | None:
        """The message a project sent with this idempotency key, if any."""
        ...

    async def release_idempotency_key(self, message_id: str) -> None:
        """Forget a message's idempotency key (its window has passed)."""
        ...


class MessageReader(Protocol):
    """Stored messages read back (core/reads)."""

    async def get_message(self, phone_number_id: str, message_id: str) -> StoredMessage | None:
        """One message of a phone number."""
        ...

    async def list_messages(self, query: MessageQuery) -> list[StoredMessage]:
        """Up to `query.limit` messages, newest first (oldest first when paging `before`)."""
        ...


class Timelines(Protocol):
    """The statuses Meta reported per wamid (core/reads)."""

    async def timeline(self, wamids: Sequence[str]) -> dict[str, list[TimelineEntry]]:
        """Each wamid's statuses, oldest first, with Meta's pricing and errors."""
        ...


class StatusStore(Protocol):
    """Where Meta's webhooks are stored (core/ingest); the domain decides every move."""

    async def ingest(
        self,
        statuses: Sequence[StatusRow],
        preferences: Sequence[PreferenceRow],
        events: Sequence[EventRow],
        received_ms: int,
        *,
        sandbox_only: bool = False,
    ) -> IngestResult:
        """Store every storable row once; move each matched message forward only.

        `sandbox_only`: keep only what concerns sandbox numbers. Raises only when the
        store is unavailable (nothing is lost: Meta retries).
        """
        ...


class Admin(Protocol):
    """Projects, API keys and phone numbers as the operator manages them (core/admin)."""

    async def create_project(self, project: Project) -> None:
        """Add a project."""
        ...

    async def list_projects(self) -> list[Project]:
        """Every project, oldest first."""
        ...

    async def set_project_rate_limit(self, project_id: str, rate_limit: int | None) -> bool:
        """Set (None: clear) a project's requests per minute; False if there is no such project."""
        ...

    async def set_project_policies(
        self, project_id: str, marketing_limit: str, frequency_cap: int | None
    ) -> bool:
        """Set a project's 131049 policy ("hold" or "refuse") and frequency cap (None: no
        cap); False if there is no such project."""
        ...

    async def create_api_key(self, key: ApiKey, key_hash: str) -> None:
        """Add an API key by its hash."""
        ...

    async def list_api_keys(self, project_id: str) -> list[ApiKey]:
        """A project's keys, revoked ones included, oldest first."""
        ...

    async def revoke_api_key(self, key_id: str, at: int) -> bool:
        """Revoke a key; False if there is no such live key."""
        ...

    async def add_phone_number(self, number: PhoneNumber, *, created_at: int) -> None:
        """Add a phone number; raises ValueError if its id is taken or its project unknown."""
        ...

    async def list_phone_numbers(self, project_id: str | None) -> list[PhoneNumber]:
        """A project's phone numbers (every number when None), ordered by id."""
        ...

    async def update_phone_number(
        self,
        phone_number_id: str,
        *,
        access_token: str | None,
        mps: int | None,
        waba_id: str | None,
    ) -> bool:
        """Change what is given (None: keep it); False if there is no such number."""
        ...

    async def remove_phone_number(self, phone_number_id: str, *, force: bool) -> int | None:
        """Count the number's undelivered (queued or sending) messages and, if there are none
        or `force`, delete the number with every message, status and event of it, in one
        transaction. None if there is no such number."""
        ...

    async def get_phone_number(self, phone_number_id: str) -> PhoneNumber | None:
        """A phone number by its id."""
        ...


class SchemaProbe(Protocol):
    """The database as readiness sees it (core/health)."""

    async def schema_revision(self) -> str | None:
        """The schema revision the database is at (None: no schema yet).

        Raises when the database cannot be reached.
        """
        ...


class Retention(Protocol):
    """Pruning what nothing needs any more (core/retention)."""

    async def prune(self, final_before_ms: int, limit: int) -> int:
        """Delete up to `limit` messages that reached a final status before `final_before_ms`
        (and are out of the queue), with their statuses and events, in one transaction.

        Returns the messages deleted: fewer than `limit` when no more are due.
        """
        ...


class Upstream(Protocol):
    """Meta's Graph API, or the sandbox."""

    async def send(
        self, base_url: str, version: str, phone_number_id: str, token: str, payload: bytes
    ) -> UpstreamResult:
        """POST one marketing message."""
        ...

    async def throughput(
        self, base_url: str, version: str, phone_number_id: str, token: str
    ) -> int | None:
        """The number's throughput tier in msg/s from Meta, or None when unknown."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class WorkSignal(Protocol):
    """How the accept path tells this process's worker that a number has new work."""

    def notify(self, phone_number_id: str) -> None:
        """A message of this number was committed to the queue; never blocks."""
        ...


class NotifySignal(Protocol):
    """How a path that wrote customer webhook deliveries wakes this process's notifier."""

    def ring(self) -> None:
        """Deliveries may be due; never blocks."""
        ...


class Queue(Protocol):
    """The delivery queue."""

    async def waiting(self) -> list[Waiting]:
        """The numbers with queued messages, each with when its earliest one is due.

        One query whose cost grows with the numbers that have work, not with the
        messages queued nor with the idle numbers.
        """
        ...

    async def claim(
        self,
        phone_number_id: str,
        owner: str,
        now: float,
        *,
        lease_s: float,
        horizon_s: float,
        limit: int,
        tier_mps: int | None = None,
    ) -> list[Claimed]:
        """Claim due messages and book their send slots."""
        ...

    async def record(self, outcome: Outcome) -> None:
        """Commit a send's outcome."""
        ...

    async def throttle(self, phone_number_id: str, now: float) -> None:
        """Slow a number down after a 130429."""
        ...

    async def hold_recipient(self, phone_number_id: str, recipient: str, until_ms: int) -> None:
        """Send nothing to a recipient before `until_ms` after a 131056 (one write: its
        pair's pacing; its queued messages are not rewritten)."""
        ...

    async def reap_leases(self, now: float) -> int:
        """Requeue messages whose lease ended."""
        ...

    async def expire(self, now: float) -> int:
        """Fail queued messages past their TTL."""
        ...

    async def reconcile(self, now: float) -> int:
        """Apply statuses that arrived before their wamid was recorded."""
        ...

    async def close(self) -> None:
        """Commit pending outcomes."""
        ...


class WebhookEndpoints(Protocol):
    """Customer webhook endpoints as the management API and CLI change them (core/notify).

    Secrets and headers are sealed at rest by the SQL store; callers see plaintext.
    """

    async def add_endpoint(self, endpoint: WebhookEndpoint) -> None:
        """Add an endpoint; raises ValueError if its phone number is unknown."""
        ...

    async def get_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        """An endpoint by its id."""
        ...

    async def list_endpoints(self, phone_number_id: str) -> list[WebhookEndpoint]:
        """A phone number's endpoints, oldest first."""
        ...

    async def update_endpoint(self, endpoint: WebhookEndpoint) -> bool:
        """Replace a stored endpoint by this one (same id); False if there is none.

        Turning `paused_at` from set to None (a resume) makes its waiting deliveries due now.
        """
        ...

    async def remove_endpoint(self, endpoint_id: str) -> bool:
        """Delete an endpoint with its deliveries and attempts; False if there is none."""
        ...


class Notifications(Protocol):
    """The outbox of customer webhook deliveries (core/notify).

    Deliveries are written by the stores themselves, in the transaction of the status
    move (ingest, outcomes, expiry) or opt-out that causes them (see
    `domain.notifications.fan_out`), or by `add_test_delivery`.
    """

    async def claim_deliveries(
        self, owner: str, now_ms: int, *, limit: int, per_endpoint: int, lease_ms: int
    ) -> list[ClaimedDelivery]:
        """Lease up to `limit` due deliveries to `owner`, oldest first.

        Due: `pending` with `next_attempt_at <= now_ms`, of an active endpoint that is not
        paused, and the oldest not yet delivered or dead of its (endpoint, order_key)
        (none of that key is leased). At most `per_endpoint` deliveries of one endpoint
        are leased at once (counting those already leased). Never the same delivery to
        two owners.
        """
        ...

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Store each attempt and its delivery's new state (only where `owner` still holds
        the lease), and the endpoint's health: a success clears `failing_since` and, if it
        was set at least OUTAGE_S before (the endpoint was down and is back), makes its
        waiting deliveries due at once; a failure sets it if unset. Pausing is the caller's
        decision (`pause_endpoint`)."""
        ...

    async def settle(
        self,
        records: Sequence[AttemptRecord],
        owner: str,
        now_ms: int,
        *,
        limit: int,
        per_endpoint: int,
        lease_ms: int,
    ) -> list[ClaimedDelivery]:
        """`record_attempts(records)` then `claim_deliveries(owner, now_ms, ...)` (none
        with `limit` 0), as one transaction: both happen or neither does."""
        ...

    async def pause_endpoint(
        self, endpoint_id: str, at_ms: int, failing_before_ms: int | None = None
    ) -> bool:
        """Pause an endpoint at `at_ms` (its deliveries wait); False if there is none or
        it is paused. With `failing_before_ms` (a notifier's pause), only if it has failed
        since then or earlier: a resume or a success that cleared `failing_since` after
        the notifier's claim must not be overruled by what the claim saw."""
        ...

    async def add_test_delivery(
        self, endpoint_id: str, delivery_id: str, data: str, now_ms: int
    ) -> bool:
        """Queue a `whatsapp.webhook.test` delivery for one endpoint; False if none."""
        ...

    async def list_deliveries(
        self,
        endpoint_id: str,
        *,
        state: DeliveryState | None = None,
        limit: int = 20,
        before_seq: int | None = None,
    ) -> list[DeliveryView]:
        """An endpoint's deliveries, newest first (`before_seq`: the next page)."""
        ...

    async def list_attempts(
        self, endpoint_id: str, *, limit: int = 20, before_seq: int | None = None
    ) -> list[AttemptView]:
        """An endpoint's attempts, newest first."""
        ...

    async def replay(self, endpoint_id: str, delivery_id: str | None, now_ms: int) -> int:
        """Make dead deliveries of an endpoint (one, or all when None) pending and due now,
        their attempts counted from zero again; returns how many."""
        ...

    async def reap_deliveries(self, now_ms: int) -> int:
        """Make deliveries whose lease ended pending again; returns how many."""
        ...

    async def prune_deliveries(self, before_ms: int, limit: int) -> int:
        """Delete up to `limit` attempts and delivered deliveries older than `before_ms`."""
        ...


class PostResult(Protocol):
    """What one webhook POST got back."""

    status_code: int | None
    error: str | None
    retry_after_s: float | None
    latency_ms: int


class WebhookPoster(Protocol):
    """POSTs a signed body to a customer's URL (adapters/notify), refusing forbidden addresses."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> PostResult:
        """One attempt: no redirects followed; never raises for the receiver's failures."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class UpstreamAnswer(Protocol):
    """An HTTP answer of the upstream, passed on as it came."""

    @property
    def status(self) -> int:
        """The HTTP status."""
        ...

    @property
    def body(self) -> bytes:
        """The body (JSON)."""
        ...


class TemplateSource(Protocol):
    """A WABA's message templates at the upstream (Meta's Graph API or a sandbox)."""

    async def list_templates(
        self, base_url: str, version: str, waba_id: str, token: str
    ) -> list[dict[str, Any]]:
        """Every template of the WABA (all pages), as Meta's JSON; raises
        `TemplatesUnavailable` when the upstream cannot say."""
        ...

    async def create_template(
        self, base_url: str, version: str, waba_id: str, token: str, body: bytes
    ) -> UpstreamAnswer:
        """POST a template creation; the upstream's answer as it came."""
        ...

    async def delete_template(
        self, base_url: str, version: str, waba_id: str, token: str, query: Mapping[str, str]
    ) -> UpstreamAnswer:
        """DELETE a template (`name`, optionally `hsm_id`); the upstream's answer."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class RecipientStates(Protocol):
    """Opt-outs and Meta's per-user limits as stored, for the send checks."""

    async def recipient_changes(
        self, since_ms: int
    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, int]]]:
        """Opt-out rows (waba_id, recipient, "stop" | "resume") and limit rows (waba_id,
        recipient, until_ms) written at or after `since_ms` (0: every stop and live limit)."""
        ...

    async def recipient_state(self, waba_id: str, recipient: str) -> tuple[bool, int | None]:
        """Whether the recipient stopped marketing messages, and until when Meta limits them."""
        ...


class FrequencyCaps(Protocol):
    """Each capped project's marketing sends per recipient, counted across processes."""

    async def take(
        self, project_id: str, recipient: str, cap: int, now_ms: int, window_ms: int
    ) -> int | None:
        """Count one send if fewer than `cap` went in the last `window_ms` (None); else the
        time (ms) the next may go."""
        ...


class TemplatesUnavailable(Exception):
    """The upstream did not list a WABA's templates (down, refused, or answered nonsense)."""


class Templates(Protocol):
    """The stored templates of each WABA, shared by every process."""

    async def templates_of(self, waba_id: str) -> tuple[list[Template], int | None]:
        """A WABA's templates (DELETED ones included) and when they were last synced."""
        ...

    async def replace_templates(
        self, waba_id: str, templates: Sequence[Template], now_ms: int
    ) -> list[Template]:
        """Store a full listing: new and changed rows written, rows it lacks marked
        DELETED, the WABA synced at `now_ms`. Returns the rows that changed."""
        ...

    async def update_templates(
        self, updates: Sequence[TemplateUpdate], now_ms: int, *, sandbox_only: bool = False
    ) -> tuple[list[tuple[str, Template]], set[str]]:
        """Apply template webhooks: the (waba_id, template) rows changed, and the WABAs
        with an update for a template not stored (their listing is stale). `sandbox_only`:
        only for WABAs whose numbers all go to the sandbox."""
        ...

    async def changed_since(self, since_ms: int) -> list[tuple[str, Template]]:
        """Every (waba_id, template) row written at or after `since_ms`."""


class SuppressionStore(Protocol):
    """A WABA's suppressed recipients as the management API and CLI change them
    (core/suppressions); Meta's `user_preferences` write the same rows (StatusStore)."""

    async def add_suppressions(
        self, waba_id: str, recipients: Sequence[str], now_ms: int
    ) -> list[str]:
        """Suppress each recipient not suppressed yet (`stop` at `now_ms`), in one transaction;
        returns those newly suppressed (one already suppressed keeps its `since`)."""
        ...

    async def remove_suppressions(
        self, waba_id: str, recipients: Sequence[str], now_ms: int
    ) -> list[str]:
        """Lift each suppressed recipient (`resume` at `now_ms`), in one transaction; returns
        those that were suppressed. A later `stop` from Meta suppresses again; an older one
        (a late retry) does not."""
        ...

    async def get_suppression(self, waba_id: str, recipient: str) -> Suppression | None:
        """A recipient's suppression, if it is suppressed."""
        ...

    async def list_suppressions(
        self, waba_id: str, *, limit: int, after: tuple[int, str] | None = None
    ) -> list[Suppression]:
        """Up to `limit` suppressions, newest first; `after` (since, recipient) of the last
        one of a page: the next, older page."""
        ...


__all__ = [
    "Admin",
    "Clock",
    "Directory",
    "FrequencyCaps",
    "IdempotencyConflict",
    "MessageReader",
    "Notifications",
    "NotifySignal",
    "Outbox",
    "PostResult",
    "Queue",
    "RecipientStates",
    "Retention",
    "SchemaProbe",
    "StatusStore",
    "StoreUnavailable",
    "SuppressionStore",
    "SystemClock",
    "TemplateSource",
    "Templates",
    "TemplatesUnavailable",
    "Timelines",
    "Upstream",
    "UpstreamAnswer",
    "WebhookEndpoints",
    "WebhookPoster",
    "WorkSignal",
]
