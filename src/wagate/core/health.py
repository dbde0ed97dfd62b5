"""Readiness: is this process fit for traffic? Database reachable, schema at head, worker alive.

`/healthz` says the process is up; readiness (`/readyz`) asks more, cheaply: one small
query (the schema's revision, which also proves the database answers) at most once per
`cache_s` however often it is asked, bounded by a deadline, and the worker's heartbeat
(no I/O). Nothing it reports is secret: check names and what is wrong, never a URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass

from wagate.ports import Clock, SchemaProbe

OK = "ok"


@dataclass(frozen=True, slots=True)
class Readiness:
    """Each check's verdict: "ok", or what is wrong."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        """Whether every check passed."""
        return all(verdict == OK for verdict in self.checks.values())

    @property
    def failed(self) -> list[str]:
        """The names of the checks that failed."""
        return [name for name, verdict in self.checks.items() if verdict != OK]


def schema_problem(revision: str | None, head: str, known: Collection[str]) -> str | None:
    """What is wrong with a database at `revision` for code whose newest revision is `head`."""
    if revision == head:
        return None
    if revision is None:
        return f"the database has no schema: run `wagate migrate` (it creates schema {head})"
    if revision in known:
        return (
            f"the database schema is at {revision}, behind this wagate's {head}: "
            "run `wagate migrate`"
        )
    return (
        f"the database schema {revision} is unknown to this wagate (newest known: {head}); "
        "a newer wagate migrated it: run that version, or `wagate migrate` of it"
    )


class Health:
    """The readiness of one process: its database and, when it runs one, its worker."""

    def __init__(
        self,
        probe: SchemaProbe,
        clock: Clock,
        *,
        head: str,
        known: Collection[str] = (),
        timeout_s: float = 2.0,
        cache_s: float = 1.0,
    ) -> None:
        self.probe = probe
        self.clock = clock
        self.head = head
        self.known = frozenset(known)
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        # Set when the process runs a worker: whether its loop turned lately.
        self.worker_alive: Callable[[float], bool] | None = None
        self._database: tuple[float, dict[str, str]] | None = None
        self._asking = asyncio.Lock()

    async def readiness(self) -> Readiness:
        """Every check's verdict (the database's cached for `cache_s`)."""
        checks = dict(await self._database_checks())
        if self.worker_alive is not None:
            alive = self.worker_alive(self.clock.now())
            checks["worker"] = OK if alive else "the worker loop has not turned lately"
        return Readiness(checks)

    async def _database_checks(self) -> dict[str, str]:
        async with self._asking:  # one query in flight, however many ask
            now = self.clock.now()
            if self._database is not None and 0 <= now - self._database[0] < self.cache_s:
                return self._database[1]
            checks = await self._ask_database()
            self._database = (self.clock.now(), checks)
            return checks

    async def _ask_database(self) -> dict[str, str]:
        try:
            revision = await asyncio.wait_for(self.probe.schema_revision(), self.timeout_s)
        except TimeoutError:
            return {"database": f"no answer within {self.timeout_s:g} s", "schema": "unknown"}
        except Exception as exc:
            return {"database": f"unreachable ({type(exc).__name__})", "schema": "unknown"}
        return {"database": OK, "schema": self._schema_verdict(revision)}

    def _schema_verdict(self, revision: str | None) -> str:
        """OK at head; also on a schema a newer release migrated to while this process
        runs (a rolling upgrade: `wagate migrate` runs before the new processes start, and
        the old ones keep serving until replaced; a release whose migration they cannot
        run beside says so). No schema, or one behind this code, is not ready."""
        if revision is not None and revision != self.head and revision not in self.known:
            return OK
        return schema_problem(revision, self.head, self.known) or OK
