"""Each WABA's templates in memory (the `Templates` port), as `SqlTemplates` keeps them."""

from __future__ import annotations

from collections.abc import Sequence

from wagate.adapters.memory.tables import MemoryDatabase
from wagate.domain.template_events import TemplateUpdate
from wagate.domain.templates import Template, template_from_meta, template_json, with_status


class MemoryTemplates:
    """The `Templates` port on a `MemoryDatabase`."""

    def __init__(self, database: MemoryDatabase) -> None:
        """Templates in `database`."""
        self.database = database

    def _of(self, waba_id: str) -> dict[tuple[str, str], tuple[Template, int]]:
        return self.database.templates.setdefault(waba_id, {})

    async def templates_of(self, waba_id: str) -> tuple[list[Template], int | None]:
        """A WABA's templates (DELETED ones included) and when they were last synced."""
        rows = self._of(waba_id)
        return [t for t, _ in rows.values()], self.database.template_syncs.get(waba_id)

    async def replace_templates(
        self, waba_id: str, listed: Sequence[Template], now_ms: int
    ) -> list[Template]:
        """Store a full listing; rows it lacks become DELETED. Returns what changed."""
        rows = self._of(waba_id)
        changed: list[Template] = []
        seen = {(t.name, t.language) for t in listed}
        for template in listed:
            before = rows.get((template.name, template.language))
            if before is None or template_json(before[0]) != template_json(template):
                changed.append(template)
        for key, (template, _) in rows.items():
            if key not in seen and template.status != "DELETED":
                changed.append(with_status(template, "DELETED"))
        for template in changed:
            rows[(template.name, template.language)] = (template, now_ms)
        self.database.template_syncs[waba_id] = now_ms
        return changed

    async def update_templates(
        self, updates: Sequence[TemplateUpdate], now_ms: int, *, sandbox_only: bool = False
    ) -> tuple[list[tuple[str, Template]], set[str]]:
        """Apply template webhooks in order; (rows changed, WABAs whose listing is stale)."""
        changed: dict[tuple[str, str, str], Template] = {}
        stale: set[str] = set()
        for change in updates:
            if sandbox_only and not self._sandbox_only(change.waba_id):
                continue
            rows = self._of(change.waba_id)
            found = next(
                (t for t, _ in rows.values() if t.id == change.template_id),
                rows.get((change.name or "", change.language or ""), (None, 0))[0],
            )
            if found is None or found.status == "DELETED":
                stale.add(change.waba_id)
                continue
            after = template_from_meta(
                {
                    **template_json(found),
                    "status": change.status or found.status,
                    "category": change.category or found.category,
                }
            )
            rows[(after.name, after.language)] = (after, now_ms)
            changed[(change.waba_id, after.name, after.language)] = after
        for waba_id in stale:
            self.database.template_syncs[waba_id] = 0
        return [(waba_id, t) for (waba_id, _, _), t in changed.items()], stale

    async def changed_since(self, since_ms: int) -> list[tuple[str, Template]]:
        """Every (waba_id, template) row written at or after `since_ms`."""
        return [
            (waba_id, template)
            for waba_id, rows in self.database.templates.items()
            for template, written in rows.values()
            if written >= since_ms
        ]

    def _sandbox_only(self, waba_id: str) -> bool:
        upstreams = {
            row.number.upstream
            for row in self.database.numbers.values()
            if row.number.waba_id == waba_id
        }
        return upstreams == {"sandbox"}
