"""Wiring: the store, clock, use cases and background work one gateway process shares."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from dataclasses import dataclass, field

from wagate.adapters.logs import process_started, process_stopped
from wagate.adapters.notify.poster import HttpPoster
from wagate.adapters.sandbox import SandboxApp, SandboxConfig, create_sandbox_app
from wagate.adapters.sandbox.access import GatewayTokens
from wagate.adapters.startup import printable_url
from wagate.adapters.store.engine import dialect_of
from wagate.adapters.store.listen import WorkListener, work_listener
from wagate.adapters.store.migrate import HEAD, KNOWN
from wagate.adapters.store.notify import SqlNotifications
from wagate.adapters.store.queue import SqlQueue
from wagate.adapters.store.recipients import SqlFrequencyCaps, SqlRecipientStates
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.statuses import SqlStatusStore
from wagate.adapters.store.suppressions import SqlSuppressions
from wagate.adapters.store.templates import SqlTemplates
from wagate.adapters.upstream.embedded import EmbeddedSandboxTemplates, EmbeddedSandboxUpstream
from wagate.adapters.upstream.graph import GraphClient
from wagate.adapters.upstream.templates import GraphTemplates
from wagate.core.accept import Acceptor
from wagate.core.access import Access
from wagate.core.compliance import SendChecks
from wagate.core.dispatch import Dispatcher, DispatchSettings, WorkBell
from wagate.core.health import Health
from wagate.core.ingest import Ingestor
from wagate.core.notify import Notifier, NotifyBell, NotifySettings
from wagate.core.reads import Reader
from wagate.core.recipients import RecipientBook
from wagate.core.retention import Pruner
from wagate.core.suppressions import SuppressionAdmin
from wagate.core.templates import TemplateBook, TemplateSettings
from wagate.domain import notify_formats
from wagate.domain.pacing import pair_rate
from wagate.domain.ratelimit import RateLimiter
from wagate.domain.ssrf import AddressPolicy
from wagate.ports import (
    Clock,
    Queue,
    Retention,
    SystemClock,
    TemplateSource,
    Upstream,
)
from wagate.settings import Settings

log = logging.getLogger("wagate")
SANDBOX_PREFIX = "/sandbox"
# How long "is there a sandbox number?" and a sandbox number's token are trusted
# before the database is asked again: a number the CLI adds works within this time.
SANDBOX_LOOKUP_SECONDS = 2.0


def freeze_startup_objects() -> None:
    """Move everything allocated at startup out of the garbage collector's sight.

    The modules, the app and the caches are never garbage; without this, every
    full collection walks them (~150k objects) and pauses sending for 100-200 ms,
    which shows as bursts in the paced send rate.
    """
    gc.collect()
    gc.freeze()


@dataclass(slots=True)
class Services:
    """Everything a request handler or worker may need, built once per process.

    The use cases are written against ports; `build` is the one place that picks
    the SQL adapters. `store` stays concrete: it owns the connections and the
    installation's secrets, which no use case needs.
    """

    settings: Settings
    store: SqlStore
    clock: Clock
    access: Access
    acceptor: Acceptor
    reader: Reader
    queue: Queue
    # The same SQL queue, as what the worker's retention prunes through.
    retention: Retention
    ingestor: Ingestor
    upstream: Upstream
    # Rung by this process's accepts (and, on PostgreSQL, other processes'): wakes the worker.
    bell: WorkBell
    # Readiness (/readyz): the database, its schema and, when this process runs one, the worker.
    health: Health
    # Customer webhooks: endpoints and the outbox; the bell wakes this process's notifier.
    notifications: SqlNotifications
    notify_bell: NotifyBell
    # Each WABA's templates, in memory for the send checks (see core/templates.py).
    templates: TemplateBook
    template_source: TemplateSource
    # Opt-outs and Meta's per-user limits, in memory for the send checks.
    recipients: RecipientBook
    # Suppressed recipients per WABA, as the management API changes them; its `on_change`
    # tells this process's send path of each committed change.
    suppressions: SuppressionAdmin
    sandbox: SandboxApp | None = None
    dispatcher: Dispatcher | None = None
    notifier: Notifier | None = None
    listener: WorkListener | None = None
    # Per-project request limits, in this process's memory (see domain/ratelimit.py).
    limiter: RateLimiter = field(default_factory=RateLimiter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _worker: asyncio.Task[None] | None = None
    _pruning: asyncio.Task[None] | None = None
    _template_polling: asyncio.Task[None] | None = None
    _recipient_polling: asyncio.Task[None] | None = None
    # (monotonic time of the check, whether a sandbox number existed then)
    _sandbox_wanted: tuple[float, bool] = (float("-inf"), False)
    _sandbox_check: asyncio.Lock = field(default_factory=asyncio.Lock)
    # What `start` logged this process as (api, api+worker); None before it.
    _role: str | None = None

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Services:
        """Services on a new store for `settings.database_url`."""
        clock = clock or SystemClock()
        store = SqlStore.from_url(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            secret_key=settings.secret_key,
        )
        pairs = pair_rate(settings.pair_interval_seconds, settings.pair_burst)
        statuses = SqlStatusStore(store.engine, hold_tolerance_us=pairs.tolerance)
        queue = SqlQueue(store.engine, store.secrets, pairs)
        bell = WorkBell()
        notify_bell = NotifyBell()
        template_source = GraphTemplates(timeout_s=min(settings.upstream_timeout_seconds, 10.0))
        templates = TemplateBook(
            SqlTemplates(store.engine),
            template_source,
            clock,
            lambda number: settings.upstream_base(number.upstream),
            settings.meta_graph_version,
            TemplateSettings(
                refresh_s=settings.template_refresh_seconds,
                miss_s=settings.template_miss_seconds,
            ),
        )
        recipients = RecipientBook(SqlRecipientStates(store.engine), clock)
        return cls(
            settings=settings,
            store=store,
            clock=clock,
            access=Access(store, clock, settings.auth_cache_seconds),
            acceptor=Acceptor(
                store,
                clock,
                ttl_seconds=settings.message_ttl_seconds,
                idempotency_window_seconds=settings.idempotency_window_seconds,
                work=bell,
                checks=SendChecks(
                    templates if settings.template_checks else None,
                    recipients,
                    SqlFrequencyCaps(store.engine),
                    clock,
                ),
            ),
            reader=Reader(store, statuses),
            queue=queue,
            retention=queue,
            ingestor=Ingestor(
                statuses,
                clock,
                settings.meta_app_secret,
                notify=notify_bell,
                templates=templates,
                recipients=recipients,
            ),
            upstream=GraphClient(timeout_s=settings.upstream_timeout_seconds),
            bell=bell,
            health=Health(store, clock, head=HEAD, known=KNOWN),
            notifications=SqlNotifications(store.engine, store.secrets),
            notify_bell=notify_bell,
            templates=templates,
            template_source=template_source,
            recipients=recipients,
            suppressions=SuppressionAdmin(
                store,
                SqlSuppressions(store.engine),
                clock,
                # A change commits, then this process's send checks hold it at once.
                on_change=lambda waba_id, changes: recipients.note_preferences(
                    (waba_id, recipient, value) for recipient, value in changes
                ),
            ),
        )

    def dispatcher_for(self) -> Dispatcher:
        """A delivery worker on these services, woken by their bell; on PostgreSQL, a
        listener rings the bell for other processes' accepts too."""
        if self.listener is None:
            self.listener = work_listener(
                self.store.engine,
                self.bell,
                self.bell.notify_all,
                webhooks=self.notify_bell.ring,
            )
            if self.listener is not None:
                self.listener.start()
        return Dispatcher(
            self.queue,
            self.upstream,
            self.clock,
            lambda number: self.settings.upstream_base(number.upstream),
            DispatchSettings(
                graph_version=self.settings.meta_graph_version,
                lease_s=self.settings.lease_seconds,
                poll_s=self.settings.worker_poll_seconds,
                claim_concurrency=1 if dialect_of(self.store.engine).serialises_writes else 8,
            ),
            bell=self.bell,
        )

    def notifier_for(self, owner: str) -> Notifier:
        """The customer-webhook notifier beside a worker (same owner name in leases and logs)."""
        settings = self.settings
        policy = AddressPolicy(
            allow_private=settings.webhooks_allow_private,
            allow_cidrs=settings.webhook_allowed_networks(),
        )
        return Notifier(
            self.notifications,
            HttpPoster(policy),
            self.clock,
            notify_formats.render,
            NotifySettings(
                per_endpoint=settings.webhook_concurrency,
                pause_after_s=settings.webhook_pause_after_seconds,
                poll_s=settings.worker_poll_seconds,
            ),
            owner=owner,
            bell=self.notify_bell,
        )

    def pruner_for(self) -> Pruner:
        """Retention on these services' queue (does nothing with WAGATE_RETENTION_DAYS=0)."""
        return Pruner(self.retention, self.clock, days=self.settings.retention_days)

    async def run_worker(self, stop: asyncio.Event) -> None:
        """A delivery worker and retention until `stop`; readiness follows the worker."""
        dispatcher = self.dispatcher = self.dispatcher or self.dispatcher_for()
        notifier = self.notifier = self.notifier or self.notifier_for(dispatcher.owner)
        self.health.worker_alive = dispatcher.alive
        pruning = asyncio.create_task(self.pruner_for().run(stop))
        notifying = asyncio.create_task(notifier.run(stop))
        try:
            await dispatcher.run(stop)
        finally:
            stop.set()
            await pruning
            await notifying
            await notifier.poster.close()

    async def start(self, *, embedded_sandbox: bool, worker: bool) -> None:
        """Build the embedded sandbox (unless WAGATE_SANDBOX=0) and start a worker if asked.

        The sandbox signs its webhooks with the installation's own secret, never
        with Meta's app secret: a status it signs can only touch sandbox numbers.
        """
        if embedded_sandbox and self.settings.sandbox_mode() != "off":
            secret = await self.store.installation_secret()
            self.ingestor.sandbox_secret = secret
            base = self.settings.public_url or "http://127.0.0.1:8080"
            config = dataclasses.replace(
                SandboxConfig.from_env(),
                webhook_url=f"{base}/webhooks/meta",
                app_secret=secret,
                admin_token=self.settings.admin_token,
                token="",
            )
            tokens = GatewayTokens(
                self.store.sandbox_credential,
                self.store.sandbox_waba_tokens,
                ttl=SANDBOX_LOOKUP_SECONDS,
                grace=config.token_grace,
            )
            # Its webhook sender starts with the first send it accepts.
            self.sandbox = create_sandbox_app(config, prefix=SANDBOX_PREFIX, tokens=tokens)
            # This process's worker sends to its own sandbox in process (see the module),
            # and the sandbox's status webhooks, signed as ever, go straight to the ingest.
            self.upstream = EmbeddedSandboxUpstream(
                self.upstream, f"{base}{SANDBOX_PREFIX}", self.sandbox, self._sandbox_served
            )
            if self.sandbox.sender is not None:
                self.sandbox.sender.deliver = self._ingest_sandbox_webhook
            # The book and the template routes list and change its templates in process.
            self.template_source = self.templates.source = EmbeddedSandboxTemplates(
                self.template_source, f"{base}{SANDBOX_PREFIX}", self.sandbox
            )
        if self.settings.template_checks:
            self._template_polling = asyncio.create_task(self.templates.run(self._stop))
        self._recipient_polling = asyncio.create_task(self.recipients.run(self._stop))
        if worker:
            self.dispatcher = self.dispatcher_for()
            self._worker = asyncio.create_task(self.run_worker(self._stop))
        self._role = "api+worker" if worker else "api"
        process_started(
            self._role,
            printable_url(self.settings.database_url),
            sandbox="embedded" if self.sandbox is not None else "off",
        )
        freeze_startup_objects()

    async def start_gateway(self) -> None:
        """Start what a `wagate serve` process runs beside the API."""
        await self.start(embedded_sandbox=True, worker=self.settings.worker)

    async def served_sandbox(self) -> SandboxApp | None:
        """The embedded sandbox if it is served now: WAGATE_SANDBOX=1, or a sandbox number exists.

        The database is asked at most once per SANDBOX_LOOKUP_SECONDS, so a number
        the CLI adds makes the sandbox appear within that time.
        """
        if self.sandbox is None or self.settings.sandbox_mode() == "on":
            return self.sandbox
        checked_at, wanted = self._sandbox_wanted
        if not 0 <= self.clock.now() - checked_at < SANDBOX_LOOKUP_SECONDS:
            if self._sandbox_check.locked() and checked_at != float("-inf"):
                # Asked already: the last answer serves until it comes (sends do not wait).
                return self.sandbox if wanted else None
            async with self._sandbox_check:
                checked_at, wanted = self._sandbox_wanted
                if not 0 <= self.clock.now() - checked_at < SANDBOX_LOOKUP_SECONDS:
                    wanted = await self.store.has_sandbox_numbers()
                    self._sandbox_wanted = (self.clock.now(), wanted)
        return self.sandbox if wanted else None

    async def _ingest_sandbox_webhook(self, body: bytes, signature: str) -> None:
        """A webhook of the embedded sandbox, as `POST /webhooks/meta` would take it: the
        signature checked, the body decoded and stored (an error is the sandbox's retry)."""
        await self.ingestor.receive(body, signature)

    async def _sandbox_served(self) -> bool:
        return await self.served_sandbox() is not None

    async def close(self) -> None:
        """Stop the worker, flush pending commits and release connections."""
        self._stop.set()
        if self._worker is not None:
            await self._worker
        if self._template_polling is not None:
            await self._template_polling
        if self._recipient_polling is not None:
            await self._recipient_polling
        if self.listener is not None:
            await self.listener.close()
        if self.sandbox is not None:
            await self.sandbox.aclose()
        await self.queue.close()
        await self.upstream.close()
        await self.template_source.close()
        await self.store.close()
        if self._role is not None:
            process_stopped(self._role)
