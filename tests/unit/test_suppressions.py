"""Managing suppressions on the in-memory store: recipients read as a send reads them, one
list per WABA that Meta's opt-outs share, removals that a late retry of Meta cannot undo,
imports that report each bad recipient, pages, and what another project cannot reach."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import pytest

from tests.unit.memory import START, Memory
from wagate.adapters.memory import MemorySuppressions
from wagate.core.admin import AdminError, NumberNotFound
from wagate.core.suppressions import (
    MAX_IMPORT,
    BadRecipient,
    SuppressionAdmin,
    SuppressionNotFound,
)
from wagate.domain.statuses import PreferenceRow

NUMBER = "106540352242922"
WABA = "102290129340398"
BSUID = "US.13491208655302741918"
NOW_MS = int(START * 1000)


class World:
    """Memory, the use case on it, and what its `on_change` was told."""

    def __init__(self) -> None:
        self.memory = Memory()
        self.changes: list[tuple[str, list[tuple[str, str]]]] = []
        self.suppressions = SuppressionAdmin(
            self.memory.store,
            MemorySuppressions(self.memory.database),
            self.memory.clock,
            on_change=self.told,
        )

    def told(self, waba_id: str, changes: Sequence[tuple[str, str]]) -> None:
        self.changes.append((waba_id, list(changes)))

    async def project(self, phone_number_id: str = NUMBER) -> str:
        return (await self.memory.number(phone_number_id=phone_number_id)).project_id

    async def meta_says(self, recipient: str, value: str, at_ms: int) -> None:
        """A `user_preferences` webhook from Meta, as the ingest stores it."""
        row = PreferenceRow(WABA, recipient, value, at_ms)
        await self.memory.statuses.ingest([], [row], [], at_ms)

    async def listed(self, phone_number_id: str = NUMBER) -> list[str]:
        page = await self.suppressions.page(phone_number_id, limit=100)
        return [s.recipient for s in page.suppressions]


@pytest.fixture
async def world() -> World:
    found = World()
    await found.project()
    return found


async def test_a_typed_phone_number_is_suppressed_as_its_digits(world: World) -> None:
    added = await world.suppressions.add(NUMBER, " +44 7700-900123 ")
    assert added.added
    assert (added.suppression.recipient, added.suppression.kind) == ("447700900123", "phone")
    assert (added.suppression.since, added.suppression.updated_at) == (NOW_MS, NOW_MS)
    assert added.suppression.waba_id == WABA
    assert await world.listed() == ["447700900123"]
    assert world.changes == [(WABA, [("447700900123", "stop")])]
    found = await world.suppressions.find(NUMBER, "447700900123")
    assert found == added.suppression


async def test_adding_twice_keeps_the_first_time_and_tells_nothing_new(world: World) -> None:
    first = await world.suppressions.add(NUMBER, "447700900123")
    world.memory.clock.at += 60
    again = await world.suppressions.add(NUMBER, "+447700900123")
    assert not again.added
    assert again.suppression.since == first.suppression.since
    assert len(world.changes) == 1


async def test_a_bsuid_is_kept_as_given(world: World) -> None:
    for bsuid in (BSUID, "US.ENT.11815799212886844830"):
        added = await world.suppressions.add(NUMBER, bsuid)
        assert (added.suppression.recipient, added.suppression.kind) == (bsuid, "bsuid")


@pytest.mark.parametrize(
    ("recipient", "words"),
    [
        ("hello", "'hello'"),
        ("07700 900123", "country code"),
        ("", "''"),
        ("us.123", "'us.123'"),
        ("4" * 70, "longer than 64"),
        ("1\x002", "neither a phone number"),
    ],
)
async def test_a_bad_recipient_is_refused_naming_it_and_nothing_is_stored(
    world: World, recipient: str, words: str
) -> None:
    with pytest.raises(BadRecipient, match="neither a phone number") as refused:
        await world.suppressions.add(NUMBER, recipient)
    assert words in str(refused.value)
    assert await world.listed() == []
    assert world.changes == []


async def test_a_removed_suppression_is_gone_and_removing_it_again_is_not_found(
    world: World,
) -> None:
    await world.suppressions.add(NUMBER, "447700900123")
    world.memory.clock.at += 1
    assert await world.suppressions.remove(NUMBER, "+44 7700 900123") == "447700900123"
    assert await world.listed() == []
    assert await world.suppressions.find(NUMBER, "447700900123") is None
    assert world.changes[-1] == (WABA, [("447700900123", "resume")])
    with pytest.raises(SuppressionNotFound, match="not suppressed"):
        await world.suppressions.remove(NUMBER, "447700900123")
    with pytest.raises(SuppressionNotFound):
        await world.suppressions.remove(NUMBER, BSUID)


async def test_metas_opt_outs_are_suppressions_of_the_waba(world: World) -> None:
    await world.meta_says("447700900123", "stop", NOW_MS - 5_000)
    [found] = (await world.suppressions.page(NUMBER)).suppressions
    assert (found.recipient, found.since) == ("447700900123", NOW_MS - 5_000)
    await world.meta_says("447700900123", "resume", NOW_MS - 1_000)
    assert await world.listed() == []


async def test_a_late_retry_of_an_older_stop_does_not_suppress_again_but_a_newer_one_does(
    world: World,
) -> None:
    await world.meta_says("447700900123", "stop", NOW_MS - 5_000)
    await world.suppressions.remove(NUMBER, "447700900123")
    await world.meta_says("447700900123", "stop", NOW_MS - 5_000)  # Meta retries for days
    assert await world.listed() == []
    await world.meta_says("447700900123", "stop", NOW_MS + 1_000)
    assert await world.listed() == ["447700900123"]


async def test_lifting_a_stop_dated_ahead_of_our_clock_outlasts_its_retry(world: World) -> None:
    await world.meta_says("447700900123", "stop", NOW_MS + 30_000)  # Meta's clock is ahead
    await world.suppressions.remove(NUMBER, "447700900123")
    await world.meta_says("447700900123", "stop", NOW_MS + 30_000)
    assert await world.listed() == []


async def test_an_import_stores_the_valid_and_reports_each_invalid_by_position(
    world: World,
) -> None:
    await world.suppressions.add(NUMBER, "447700900001")
    imported = await world.suppressions.add_many(
        NUMBER, ["+44 7700 900001", "447700900002", "nonsense", BSUID, "447700900002", "0123"]
    )
    assert (imported.added, imported.already_suppressed) == (2, 2)
    assert [(r.index, r.recipient) for r in imported.invalid] == [(2, "nonsense"), (5, "0123")]
    assert all("neither a phone number" in r.error for r in imported.invalid)
    assert sorted(await world.listed()) == sorted(["447700900001", "447700900002", BSUID])
    assert sorted(world.changes[-1][1]) == [("447700900002", "stop"), (BSUID, "stop")]


async def test_an_import_holds_one_to_a_thousand_recipients(world: World) -> None:
    for size in (0, MAX_IMPORT + 1):
        with pytest.raises(AdminError, match="1 to 1000"):
            await world.suppressions.add_many(NUMBER, ["447700900001"] * size)
    many = [f"4477009{i:05d}" for i in range(MAX_IMPORT)]
    assert (await world.suppressions.add_many(NUMBER, many)).added == MAX_IMPORT


async def test_pages_go_from_newest_to_oldest_and_cover_every_suppression_once(
    world: World,
) -> None:
    # Three at each moment: ties are ordered by recipient, and no page repeats or skips one.
    expected: list[str] = []
    for moment in range(15):
        batch = [f"4477009{moment:03d}{i:02d}" for i in range(3)]
        await world.suppressions.add_many(NUMBER, batch)
        expected = sorted(batch, reverse=True) + expected
        world.memory.clock.at += 1
    seen: list[str] = []
    after = None
    while True:
        page = await world.suppressions.page(NUMBER, limit=4, after=after)
        seen += [s.recipient for s in page.suppressions]
        if page.after is None:
            break
        after = page.after
    assert seen == expected
    for limit in (0, 101):
        with pytest.raises(AdminError, match="limit"):
            await world.suppressions.page(NUMBER, limit=limit)


async def test_a_suppression_is_the_wabas_whichever_of_its_numbers_names_it(
    world: World,
) -> None:
    other_project = await world.project("106540352242999")  # same WABA, another project
    await world.suppressions.add(NUMBER, "447700900123")
    assert await world.listed("106540352242999") == ["447700900123"]
    with pytest.raises(NumberNotFound):
        await world.suppressions.add(NUMBER, "447700900124", project_id=other_project)


async def test_another_projects_or_an_unknown_number_looks_missing(world: World) -> None:
    mine = world.memory.database.numbers[NUMBER].number.project_id
    calls: list[Callable[[str, str | None], Awaitable[object]]] = [
        lambda n, p: world.suppressions.add(n, "447700900123", project_id=p),
        lambda n, p: world.suppressions.add_many(n, ["447700900123"], project_id=p),
        lambda n, p: world.suppressions.remove(n, "447700900123", project_id=p),
        lambda n, p: world.suppressions.find(n, "447700900123", project_id=p),
        lambda n, p: world.suppressions.page(n, project_id=p),
    ]
    for call in calls:
        for number, project in (
            (NUMBER, "prj_someone_else"),
            ("999", mine),
            ("999", None),
            ("1\x002", None),
            ("1" * 500, None),
        ):
            with pytest.raises(NumberNotFound, match="no phone number"):
                await call(number, project)
    assert await world.listed() == []


async def test_a_failing_listener_does_not_fail_the_change(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(waba_id: str, changes: Sequence[tuple[str, str]]) -> None:
        raise RuntimeError("book is closed")

    world.suppressions.on_change = broken
    assert (await world.suppressions.add(NUMBER, "447700900123")).added
    assert await world.listed() == ["447700900123"]
    assert "on_change failed" in caplog.text
