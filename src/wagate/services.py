"""Wiring: the store, clock and use cases one gateway process shares."""

from __future__ import annotations

from dataclasses import dataclass

from wagate.adapters.store.sql import SqlStore
from wagate.core.accept import Acceptor
from wagate.core.access import Access
from wagate.ports import Clock, SystemClock
from wagate.settings import Settings


@dataclass(slots=True)
class Services:
    """Everything a request handler may need, built once per process."""

    settings: Settings
    store: SqlStore
    clock: Clock
    access: Access
    acceptor: Acceptor

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Services:
        """Services on a new store for `settings.database_url`."""
        clock = clock or SystemClock()
        store = SqlStore.from_url(
            settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
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
        )

    async def close(self) -> None:
        """Flush pending commits and release connections."""
        await self.store.close()
