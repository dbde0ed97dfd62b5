"""What the checks at accept read and write, alike in memory, on SQLite and on PostgreSQL:
the templates, opt-outs and limits a failure writes, and the frequency cap's counts."""

from __future__ import annotations

from typing import Any, cast

from tests.conformance.conftest import Backend
from tests.conformance.test_store_behaviour import (
    T0_MS,
    forwarded,
    new_message,
    new_number,
    report,
)
from wagate.adapters.memory import MemoryStore, MemoryTemplates
from wagate.adapters.memory.caps import MemoryFrequencyCaps
from wagate.adapters.sandbox.templates import seed_templates
from wagate.adapters.store.recipients import SqlFrequencyCaps, SqlRecipientStates
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.templates import SqlTemplates
from wagate.domain.template_events import TemplateUpdate
from wagate.domain.templates import Template, template_from_meta
from wagate.ports import FrequencyCaps, RecipientStates, Templates

DAY_MS = 24 * 3_600_000


def templates_of(backend: Backend) -> Templates:
    if isinstance(backend.store, MemoryStore):
        return MemoryTemplates(backend.store.database)
    return SqlTemplates(cast(SqlStore, backend.store).engine)


def recipients_of(backend: Backend) -> RecipientStates:
    if isinstance(backend.store, MemoryStore):
        return cast(RecipientStates, backend.statuses)
    return SqlRecipientStates(cast(SqlStore, backend.store).engine)


def caps_of(backend: Backend) -> FrequencyCaps:
    if isinstance(backend.store, MemoryStore):
        return MemoryFrequencyCaps()
    return SqlFrequencyCaps(cast(SqlStore, backend.store).engine)


def seeds() -> list[Template]:
    return [template_from_meta(t.to_json()) for t in seed_templates()]


def by_name(found: list[Template]) -> dict[str, str]:
    return {t.name: t.status for t in found}


async def test_a_listing_writes_what_changed_and_marks_what_it_lacks_deleted(
    backend: Backend,
) -> None:
    templates = templates_of(backend)
    first = seeds()
    assert len(await templates.replace_templates("waba-1", first, T0_MS)) == len(first)
    assert await templates.replace_templates("waba-1", first, T0_MS + 1) == []
    rest = [t for t in first if t.name != "promo_template"]
    [gone] = await templates.replace_templates("waba-1", rest, T0_MS + 2)
    assert (gone.name, gone.status) == ("promo_template", "DELETED")
    found, synced_at = await templates.templates_of("waba-1")
    assert synced_at == T0_MS + 2
    assert by_name(found)["promo_template"] == "DELETED"
    assert {t.name for _, t in await templates.changed_since(T0_MS + 2)} == {"promo_template"}
    assert await templates.templates_of("waba-2") == ([], None)


async def test_a_webhook_changes_a_template_by_id_and_never_brings_a_deleted_one_back(
    backend: Backend,
) -> None:
    templates = templates_of(backend)
    listed = seeds()  # each call makes new ids, as a new WABA's seeds get
    await templates.replace_templates("waba-1", listed, T0_MS)
    promo = next(t for t in listed if t.name == "promo_template")
    paused = TemplateUpdate("waba-1", promo.id, None, None, status="PAUSED")
    recategorised = TemplateUpdate(
        "waba-1", "no-such-id", "seasonal_promo", "en_US", category="UTILITY"
    )
    unknown = TemplateUpdate("waba-1", "404", "nope", "en_US", status="APPROVED")
    changed, stale = await templates.update_templates([paused, recategorised, unknown], T0_MS + 1)
    assert {(waba, t.name, t.status, t.category) for waba, t in changed} == {
        ("waba-1", "promo_template", "PAUSED", "MARKETING"),
        ("waba-1", "seasonal_promo", "APPROVED", "UTILITY"),
    }
    assert stale == {"waba-1"}
    await templates.replace_templates(
        "waba-1", [t for t in listed if t.name != "promo_template"], T0_MS + 2
    )
    late = TemplateUpdate("waba-1", promo.id, None, None, status="APPROVED")
    changed, stale = await templates.update_templates([late], T0_MS + 3)
    assert changed == []
    assert stale == {"waba-1"}
    assert by_name((await templates.templates_of("waba-1"))[0])["promo_template"] == "DELETED"


async def test_a_131050_opts_out_and_a_131049_limits_for_a_day_read_by_change(
    backend: Backend,
) -> None:
    number = await new_number(backend)
    states = recipients_of(backend)
    await forwarded(backend, number, "wamid.OPT")
    limited = new_message(number, recipient="447700900999")
    await backend.store.add_message(limited)
    stopped = [{"code": 131050, "title": "User stopped"}]
    at = T0_MS // 1000 + 5
    await backend.statuses.ingest([report("wamid.OPT", "failed", at, stopped)], [], [], T0_MS)
    result = await backend.statuses.ingest(
        [report("wamid.OPT", "failed", at, stopped)], [], [], T0_MS
    )
    assert result.duplicates == 1
    assert await states.recipient_state(number.waba_id, "447700900123") == (True, None)
    stops, limits = await states.recipient_changes(0)
    assert (number.waba_id, "447700900123", "stop") in stops
    assert limits == []
    assert (await states.recipient_changes(T0_MS + 1)) == ([], [])


async def test_a_131049_limit_holds_the_pair_for_a_day(backend: Backend) -> None:
    number = await new_number(backend)
    states = recipients_of(backend)
    await forwarded(backend, number, "wamid.LIM")
    at = T0_MS // 1000 + 5
    errors = [{"code": 131049, "title": "Healthy ecosystem"}]
    result = await backend.statuses.ingest(
        [report("wamid.LIM", "failed", at, errors)], [], [], T0_MS + 10
    )
    assert result.recipients == ((number.waba_id, "447700900123"),)
    stopped, until = await states.recipient_state(number.waba_id, "447700900123")
    assert (stopped, until) == (False, at * 1000 + DAY_MS)
    _, limits = await states.recipient_changes(T0_MS + 10)
    assert limits == [(number.waba_id, "447700900123", at * 1000 + DAY_MS)]


async def test_a_frequency_cap_counts_a_rolling_day_per_project_and_recipient(
    backend: Backend,
) -> None:
    caps = caps_of(backend)
    number = await new_number(backend)
    project = number.project_id
    take: Any = caps.take
    assert await take(project, "r1", 2, T0_MS, DAY_MS) is None
    assert await take(project, "r1", 2, T0_MS + 1000, DAY_MS) is None
    assert await take(project, "r1", 2, T0_MS + 2000, DAY_MS) == T0_MS + DAY_MS
    assert await take(project, "r2", 2, T0_MS + 2000, DAY_MS) is None
    assert await take(project, "r1", 2, T0_MS + DAY_MS + 1, DAY_MS) is None
    assert await take(project, "r1", 2, T0_MS + DAY_MS + 2, DAY_MS) == T0_MS + 1000 + DAY_MS
