"""Every adapter has every method of every port it stands for, with the port's signature.

mypy checks the same statically (`_typed` below); this test also catches a
parameter renamed or turned keyword-only, which a caller passing by name would
only find at run time.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from wagate.adapters.memory import (
    MemoryDatabase,
    MemoryQueue,
    MemoryStatusStore,
    MemoryStore,
    MemorySuppressions,
)
from wagate.adapters.store.notify import SqlNotifications
from wagate.adapters.store.queue import SqlQueue
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.statuses import SqlStatusStore
from wagate.adapters.store.suppressions import SqlSuppressions
from wagate.adapters.upstream.graph import GraphClient
from wagate.ports import (
    Admin,
    Clock,
    Directory,
    MessageReader,
    Notifications,
    Outbox,
    Queue,
    Retention,
    SchemaProbe,
    StatusStore,
    SuppressionStore,
    SystemClock,
    Timelines,
    Upstream,
    WebhookEndpoints,
)

IMPLEMENTATIONS: dict[type[Any], list[type[Any]]] = {
    Directory: [SqlStore, MemoryStore],
    Outbox: [SqlStore, MemoryStore],
    MessageReader: [SqlStore, MemoryStore],
    Admin: [SqlStore, MemoryStore],
    Timelines: [SqlStatusStore, MemoryStatusStore],
    StatusStore: [SqlStatusStore, MemoryStatusStore],
    Queue: [SqlQueue, MemoryQueue],
    Retention: [SqlQueue, MemoryQueue],
    SchemaProbe: [SqlStore, MemoryStore],
    Upstream: [GraphClient],
    Clock: [SystemClock],
    WebhookEndpoints: [SqlNotifications],
    Notifications: [SqlNotifications],
    SuppressionStore: [SqlSuppressions, MemorySuppressions],
}


def port_methods(port: type[Any]) -> list[str]:
    """The methods a port declares (its own and those it inherits from other ports)."""
    return sorted(
        name
        for klass in port.__mro__
        if getattr(klass, "_is_protocol", False) and klass.__module__ == "wagate.ports"
        for name, value in vars(klass).items()
        if not name.startswith("_") and inspect.isfunction(value)
    )


def shape(function: Any) -> list[tuple[str, Any, bool]]:
    """What a caller relies on: each parameter's name, kind, and whether it has a default."""
    parameters = inspect.signature(function).parameters.values()
    return [(p.name, p.kind, p.default is not p.empty) for p in parameters]


def mismatches(port: type[Any], adapter: type[Any]) -> list[str]:
    """How an adapter differs from a port: missing methods, other signatures, sync for async."""
    found = []
    for name in port_methods(port):
        wanted = getattr(port, name)
        actual = getattr(adapter, name, None)
        if actual is None:
            found.append(f"{adapter.__name__}.{name} is missing")
        elif shape(actual) != shape(wanted):
            found.append(
                f"{adapter.__name__}.{name}{inspect.signature(actual)} is not {name}"
                f"{inspect.signature(wanted)}"
            )
        elif inspect.iscoroutinefunction(actual) != inspect.iscoroutinefunction(wanted):
            found.append(f"{adapter.__name__}.{name} is not as async as the port's")
    return found


@pytest.mark.parametrize(
    ("port", "adapter"),
    [(port, adapter) for port, adapters in IMPLEMENTATIONS.items() for adapter in adapters],
    ids=lambda value: value.__name__,
)
def test_every_adapter_implements_its_ports_with_their_signatures(
    port: type[Any], adapter: type[Any]
) -> None:
    assert port_methods(port), f"{port.__name__} declares no method: the check would be empty"
    assert mismatches(port, adapter) == []


class Drifted:
    """A fake whose methods drifted from Outbox's: one renamed parameter, one missing."""

    async def add_message(self, new_message: object) -> None:
        """Renamed parameter."""

    async def find_by_idempotency_key(self, project_id: str, key: str) -> None:
        """As the port."""


def test_the_check_catches_a_drifted_fake() -> None:
    assert mismatches(Outbox, Drifted) == [
        "Drifted.add_message(self, new_message: 'object') -> 'None' is not "
        "add_message(self, message: 'NewMessage') -> 'None'",
        "Drifted.release_idempotency_key is missing",
    ]


def _typed(
    database: MemoryDatabase, sql: SqlStore, sql_statuses: SqlStatusStore, sql_queue: SqlQueue
) -> list[
    tuple[
        Directory,
        Outbox,
        MessageReader,
        Admin,
        SchemaProbe,
        Timelines,
        StatusStore,
        Queue,
        Retention,
    ]
]:
    """mypy's half of the check: each adapter is assignable to its ports."""
    memory = MemoryStore(database)
    statuses = MemoryStatusStore(database)
    queue = MemoryQueue(database)
    return [
        (memory, memory, memory, memory, memory, statuses, statuses, queue, queue),
        (sql, sql, sql, sql, sql, sql_statuses, sql_statuses, sql_queue, sql_queue),
    ]


def _typed_notifications(sql: SqlNotifications) -> tuple[WebhookEndpoints, Notifications]:
    """mypy's half of the check for the customer webhook ports."""
    return sql, sql


def _typed_suppressions(
    database: MemoryDatabase, sql: SqlSuppressions
) -> tuple[SuppressionStore, SuppressionStore]:
    """mypy's half of the check for the suppressions port."""
    return MemorySuppressions(database), sql
