"""Readiness: the database answers, its schema is this code's, the worker's loop turns."""

from __future__ import annotations

import asyncio

from tests.unit.memory import ManualClock, Memory, settle
from tests.unit.test_dispatch import on_memory
from wagate.core.health import Health, schema_problem

HEAD = "0006"
KNOWN = ("0001", "0005", "0006")


class CountingProbe:
    """The memory store's probe, counting how often the database is asked."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.asked = 0

    async def schema_revision(self) -> str | None:
        self.asked += 1
        return await self.memory.store.schema_revision()


def health_on(memory: Memory, revision: str | None = HEAD) -> tuple[Health, CountingProbe]:
    memory.database.schema_revision = revision
    probe = CountingProbe(memory)
    return Health(probe, memory.clock, head=HEAD, known=KNOWN, cache_s=1.0), probe


async def test_a_reachable_database_at_head_is_ready() -> None:
    health, _ = health_on(Memory())
    readiness = await health.readiness()
    assert readiness.ready
    assert readiness.checks == {"database": "ok", "schema": "ok"}


async def test_a_database_that_is_down_fails_readiness_and_recovers_once_it_answers() -> None:
    memory = Memory()
    health, _ = health_on(memory)
    memory.database.reachable = False
    down = await health.readiness()
    assert (down.ready, down.failed) == (False, ["database", "schema"])
    assert down.checks["database"] == "unreachable (StoreUnavailable)"
    memory.database.reachable = True
    memory.clock.at += 1.0
    assert (await health.readiness()).ready


async def test_the_database_is_asked_at_most_once_per_cache_period() -> None:
    memory = Memory()
    health, probe = health_on(memory)
    await asyncio.gather(*(health.readiness() for _ in range(20)))
    memory.clock.at += 0.5
    await health.readiness()
    assert probe.asked == 1
    memory.clock.at += 0.5
    await health.readiness()
    assert probe.asked == 2


async def test_a_schema_behind_or_missing_is_not_ready_and_says_to_migrate() -> None:
    for revision, words in (("0005", "behind"), (None, "no schema")):
        readiness = await health_on(Memory(), revision)[0].readiness()
        assert readiness.failed == ["schema"]
        assert words in readiness.checks["schema"]
        assert "wagate migrate" in readiness.checks["schema"]


async def test_a_schema_a_newer_release_migrated_keeps_a_running_process_ready() -> None:
    # A rolling upgrade: `wagate migrate` of the new release runs while this one serves.
    assert (await health_on(Memory(), "0099")[0].readiness()).ready


def test_a_process_refuses_to_start_on_a_schema_it_does_not_know() -> None:
    problem = schema_problem("0099", HEAD, KNOWN)
    assert problem is not None
    assert "unknown" in problem


async def test_a_database_that_does_not_answer_in_time_is_not_ready() -> None:
    class Hanging:
        async def schema_revision(self) -> str | None:
            await asyncio.sleep(10)
            return HEAD

    health = Health(Hanging(), Memory().clock, head=HEAD, timeout_s=0.01)
    readiness = await health.readiness()
    assert readiness.failed == ["database", "schema"]
    assert "no answer within" in readiness.checks["database"]


def test_schema_problem_names_nothing_at_head() -> None:
    assert schema_problem(HEAD, HEAD, KNOWN) is None


async def test_an_idle_worker_stays_alive_and_a_stopped_one_does_not() -> None:
    memory, _, dispatcher = on_memory()
    clock = ManualClock()
    dispatcher.clock = clock
    health = Health(memory.store, clock, head=HEAD)
    memory.database.schema_revision = HEAD
    health.worker_alive = dispatcher.alive
    assert not (await health.readiness()).ready  # not started yet
    stop = asyncio.Event()
    worker = asyncio.create_task(dispatcher.run(stop))
    await settle()
    for _ in range(6):  # a minute with nothing to do: the loop still turns every poll
        await clock.advance(10.0)
        assert (await health.readiness()).checks["worker"] == "ok"
    stop.set()
    await worker
    readiness = await health.readiness()
    assert readiness.failed == ["worker"]


async def test_a_worker_whose_loop_hangs_goes_stale_after_a_few_poll_periods() -> None:
    _, _, dispatcher = on_memory()
    dispatcher.heartbeat = 100.0
    poll = dispatcher.settings.poll_s
    assert dispatcher.alive(100.0 + 5 * poll)
    assert not dispatcher.alive(100.0 + 5 * poll + 0.1)
