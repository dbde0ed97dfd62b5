"""The store in memory: every store-side port, for unit tests and the conformance suite.

It mirrors the SQL adapters class for class (`MemoryStore` ~ `SqlStore`,
`MemoryQueue` ~ `SqlQueue`, `MemoryStatusStore` ~ `SqlStatusStore`), all three on
one `MemoryDatabase`, and decides with the same domain functions: status moves
(`domain.statuses.decide_all`), pacing (`domain.pacing`), what may be stored
(`domain.sanitise`), the reap limit and the expiry (`domain.delivery`). Nothing
here survives the process; one event loop, so no locks.
"""

from __future__ import annotations

from wagate.adapters.memory.notify import MemoryNotifications
from wagate.adapters.memory.queue import MemoryQueue
from wagate.adapters.memory.statuses import MemoryStatusStore
from wagate.adapters.memory.store import MemoryStore
from wagate.adapters.memory.suppressions import MemorySuppressions
from wagate.adapters.memory.tables import MemoryDatabase
from wagate.adapters.memory.templates import MemoryTemplates

__all__ = [
    "MemoryDatabase",
    "MemoryNotifications",
    "MemoryQueue",
    "MemoryStatusStore",
    "MemoryStore",
    "MemorySuppressions",
    "MemoryTemplates",
]
