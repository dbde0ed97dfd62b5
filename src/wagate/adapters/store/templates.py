"""Each WABA's message templates on SQL (the `Templates` port), shared by every process.

A row is written only when it changes, stamped with the writer's clock in
`updated_at`: each process reads the rows changed since its last look (with an
overlap for clocks a little apart) and so learns of a pause another process ingested.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Insert, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from wagate.adapters.store.engine import Dialect, begin_write, dialect_of
from wagate.adapters.store.queries.statuses import UPSTREAMS_OF_WABAS
from wagate.adapters.store.tables import template_syncs, templates
from wagate.domain.template_events import TemplateUpdate
from wagate.domain.templates import Template, template_from_meta, template_json, with_status

t = templates
_COLUMNS = (
    t.c.waba_id,
    t.c.name,
    t.c.language,
    t.c.template_id,
    t.c.status,
    t.c.category,
    t.c.parameter_format,
    t.c.components,
)
OF_WABA = select(*_COLUMNS).where(t.c.waba_id == bindparam("b_waba_id"))
SYNCED_AT = select(template_syncs.c.synced_at).where(
    template_syncs.c.waba_id == bindparam("b_waba_id")
)
CHANGED_SINCE = select(*_COLUMNS).where(t.c.updated_at >= bindparam("b_since"))
BY_ID = select(*_COLUMNS).where(
    t.c.waba_id == bindparam("b_waba_id"), t.c.template_id == bindparam("b_template_id")
)
BY_NAME = select(*_COLUMNS).where(
    t.c.waba_id == bindparam("b_waba_id"),
    t.c.name == bindparam("b_name"),
    t.c.language == bindparam("b_language"),
)
SET_ATTRIBUTES = (
    update(t)
    .where(
        t.c.waba_id == bindparam("b_waba_id"),
        t.c.name == bindparam("b_name"),
        t.c.language == bindparam("b_language"),
    )
    .values(
        status=bindparam("b_status"),
        category=bindparam("b_category"),
        quality=bindparam("b_quality"),
        updated_at=bindparam("b_now"),
    )
)
# A stale listing: the next send of the WABA lists its templates again.
STALE = (
    update(template_syncs)
    .where(template_syncs.c.waba_id == bindparam("b_waba_id"))
    .values(synced_at=0)
)


@cache
def _upsert(dialect: Dialect) -> Insert:
    return dialect.upsert(
        t,
        index_elements=["waba_id", "name", "language"],
        set_=["template_id", "status", "category", "parameter_format", "components", "updated_at"],
    )


@cache
def _synced(dialect: Dialect) -> Insert:
    return dialect.upsert(template_syncs, index_elements=["waba_id"], set_=["synced_at"])


def _template(row: Any) -> Template:
    return template_from_meta(
        {
            "id": row.template_id,
            "name": row.name,
            "language": row.language,
            "status": row.status,
            "category": row.category,
            "parameter_format": row.parameter_format,
            "components": json.loads(row.components),
        }
    )


def _row(waba_id: str, template: Template, now_ms: int) -> dict[str, Any]:
    return {
        "waba_id": waba_id,
        "name": template.name,
        "language": template.language,
        "template_id": template.id,
        "status": template.status,
        "category": template.category,
        "parameter_format": template.parameter_format,
        "components": json.dumps(list(template.components), separators=(",", ":")),
        "updated_at": now_ms,
    }


def _readable(rows: Any) -> list[tuple[str, Template]]:
    """(waba_id, template) of the rows that still make a template (a row written by a
    newer wagate that this one cannot read is skipped, not fatal)."""
    found = []
    for row in rows:
        try:
            found.append((row.waba_id, _template(row)))
        except (ValueError, TypeError):
            continue
    return found


class SqlTemplates:
    """The `Templates` port on SQLite or PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Templates on `engine`."""
        self.engine = engine
        self.dialect = dialect_of(engine)

    async def templates_of(self, waba_id: str) -> tuple[list[Template], int | None]:
        """A WABA's templates (DELETED ones included) and when they were last synced."""
        key = {"b_waba_id": waba_id}
        async with self.engine.connect() as connection:
            rows = await connection.execute(OF_WABA, key)
            found = [template for _, template in _readable(rows)]
            synced_at = (await connection.execute(SYNCED_AT, key)).scalar()
        return found, None if synced_at is None else int(synced_at)

    async def replace_templates(
        self, waba_id: str, listed: Sequence[Template], now_ms: int
    ) -> list[Template]:
        """Store a full listing; rows it lacks become DELETED. Returns what changed."""
        key = {"b_waba_id": waba_id}
        async with begin_write(self.engine) as connection:
            stored = {
                (template.name, template.language): template
                for _, template in _readable(await connection.execute(OF_WABA, key))
            }
            changed: list[Template] = []
            seen: set[tuple[str, str]] = set()
            for template in listed:
                seen.add((template.name, template.language))
                before = stored.get((template.name, template.language))
                if before is None or template_json(before) != template_json(template):
                    changed.append(template)
            for name_language, template in stored.items():
                if name_language not in seen and template.status != "DELETED":
                    changed.append(with_status(template, "DELETED"))
            if changed:
                rows = [_row(waba_id, template, now_ms) for template in changed]
                await connection.execute(_upsert(self.dialect), rows)
            await connection.execute(
                _synced(self.dialect), {"waba_id": waba_id, "synced_at": now_ms}
            )
        return changed

    async def update_templates(
        self, updates: Sequence[TemplateUpdate], now_ms: int, *, sandbox_only: bool = False
    ) -> tuple[list[tuple[str, Template]], set[str]]:
        """Apply template webhooks in order; (rows changed, WABAs whose listing is stale).
        `sandbox_only`: only for WABAs whose numbers all go to the sandbox."""
        changed: dict[tuple[str, str, str], Template] = {}
        stale: set[str] = set()
        if sandbox_only:
            upstreams = await self.upstreams_of(sorted({u.waba_id for u in updates}))
            updates = [u for u in updates if upstreams.get(u.waba_id) == {"sandbox"}]
            if not updates:
                return [], stale
        async with begin_write(self.engine) as connection:
            for change in updates:
                found = (
                    await connection.execute(
                        BY_ID, {"b_waba_id": change.waba_id, "b_template_id": change.template_id}
                    )
                ).first()
                if found is None and change.name and change.language:
                    by_name = {
                        "b_waba_id": change.waba_id,
                        "b_name": change.name,
                        "b_language": change.language,
                    }
                    found = (await connection.execute(BY_NAME, by_name)).first()
                if found is None:
                    stale.add(change.waba_id)
                    continue
                before = _template(found)
                if before.status == "DELETED":
                    # A late webhook (Meta's retries come out of order) does not bring a
                    # deleted template back; the next listing says what there is.
                    stale.add(change.waba_id)
                    continue
                key = (change.waba_id, before.name, before.language)
                current = changed.get(key, before)
                after = template_from_meta(
                    {
                        **template_json(current),
                        "status": change.status or current.status,
                        "category": change.category or current.category,
                    }
                )
                await connection.execute(
                    SET_ATTRIBUTES,
                    {
                        "b_waba_id": change.waba_id,
                        "b_name": before.name,
                        "b_language": before.language,
                        "b_status": after.status,
                        "b_category": after.category,
                        "b_quality": change.quality,
                        "b_now": now_ms,
                    },
                )
                changed[key] = after
            for waba_id in sorted(stale):
                await connection.execute(STALE, {"b_waba_id": waba_id})
        return [(waba_id, template) for (waba_id, _, _), template in changed.items()], stale

    async def changed_since(self, since_ms: int) -> list[tuple[str, Template]]:
        """Every (waba_id, template) row written at or after `since_ms`."""
        async with self.engine.connect() as connection:
            return _readable(await connection.execute(CHANGED_SINCE, {"b_since": since_ms}))

    async def upstreams_of(self, waba_ids: Sequence[str]) -> dict[str, set[str]]:
        """The upstreams of each WABA's numbers (a sandbox-signed webhook may change
        only the templates of WABAs whose numbers all go to the sandbox)."""
        if not waba_ids:
            return {}
        found: dict[str, set[str]] = {}
        async with self.engine.connect() as connection:
            rows = await connection.execute(UPSTREAMS_OF_WABAS, {"b_waba_ids": list(waba_ids)})
            for waba_id, upstream in rows:
                found.setdefault(waba_id, set()).add(upstream)
        return found
