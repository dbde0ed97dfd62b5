"""Wiring: the store, clock, use cases and background work one gateway process shares."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import secrets
from dataclasses import dataclass, field

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from wagate.adapters.sandbox import SandboxApp, SandboxConfig, create_sandbox_app
from wagate.adapters.store.engine import begin_write
from wagate.adapters.store.queue import SqlQueue
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.statuses import SqlStatusStore
from wagate.adapters.store.tables import installation
from wagate.adapters.upstream.graph import GraphClient
from wagate.core.accept import Acceptor
from wagate.core.access import Access
from wagate.core.dispatch import Dispatcher, DispatchSettings
from wagate.core.ingest import Ingestor
from wagate.domain.ratelimit import RateLimiter
from wagate.ports import Clock, SystemClock
from wagate.settings import Settings

log = logging.getLogger("wagate")
SANDBOX_PREFIX = "/sandbox"


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
    """Everything a request handler or worker may need, built once per process."""

    settings: Settings
    store: SqlStore
    clock: Clock
    access: Access
    acceptor: Acceptor
    queue: SqlQueue
    statuses: SqlStatusStore
    ingestor: Ingestor
    upstream: GraphClient
    sandbox: SandboxApp | None = None
    dispatcher: Dispatcher | None = None
    # Per-project request limits, in this process's memory (see domain/ratelimit.py).
    limiter: RateLimiter = field(default_factory=RateLimiter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _worker: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Services:
        """Services on a new store for `settings.database_url`."""
        clock = clock or SystemClock()
        store = SqlStore.from_url(
            settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
        statuses = SqlStatusStore(store.engine)
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
            ),
            queue=SqlQueue(store.engine),
            statuses=statuses,
            ingestor=Ingestor(statuses, clock, settings.meta_app_secret),
            upstream=GraphClient(timeout_s=settings.upstream_timeout_seconds),
        )

    def dispatcher_for(self) -> Dispatcher:
        """A delivery worker on these services."""
        return Dispatcher(
            self.queue,
            self.upstream,
            self.clock,
            lambda number: self.settings.upstream_base(number.upstream),
            DispatchSettings(
                graph_version=self.settings.meta_graph_version,
                lease_s=self.settings.lease_seconds,
            ),
        )

    async def start(self, *, embedded_sandbox: bool, worker: bool) -> None:
        """Load the webhook secret; start the embedded sandbox and a worker if asked."""
        secret = self.settings.meta_app_secret or await self.installation_secret()
        self.ingestor.app_secret = secret
        if embedded_sandbox:
            base = self.settings.public_url or "http://127.0.0.1:8080"
            config = dataclasses.replace(
                SandboxConfig.from_env(),
                webhook_url=f"{base}/webhooks/meta",
                app_secret=secret,
            )
            self.sandbox = create_sandbox_app(config, prefix=SANDBOX_PREFIX)
            await self.sandbox.startup()
        if worker:
            self.dispatcher = self.dispatcher_for()
            self._worker = asyncio.create_task(self.dispatcher.run(self._stop))
        freeze_startup_objects()

    async def start_gateway(self) -> None:
        """Start what a `wagate serve` process runs beside the API."""
        await self.start(embedded_sandbox=True, worker=self.settings.worker)

    async def installation_secret(self) -> str:
        """The webhook secret of this installation, made once and kept in the database.

        Used when WAGATE_META_APP_SECRET is not set, so the embedded sandbox signs
        its webhooks with a secret every process of the installation shares.
        """
        query = select(installation.c.value).where(installation.c.key == "webhook_secret")
        for _ in range(3):
            async with self.store.engine.connect() as connection:
                found = (await connection.execute(query)).scalar()
            if found is not None:
                return str(found)
            value = secrets.token_hex(32)
            try:
                async with begin_write(self.store.engine) as connection:
                    await connection.execute(
                        insert(installation).values(key="webhook_secret", value=value)
                    )
                return value
            except IntegrityError:
                continue  # another process made it first: read theirs
        raise RuntimeError("could not read or create the installation's webhook secret")

    async def close(self) -> None:
        """Stop the worker, flush pending commits and release connections."""
        self._stop.set()
        if self._worker is not None:
            await self._worker
        if self.sandbox is not None:
            await self.sandbox.aclose()
        await self.queue.close()
        await self.upstream.close()
        await self.store.close()
