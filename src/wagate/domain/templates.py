"""STUB (replaced by the template-checks branch): message templates and their send checks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from wagate.domain.errors import (
    MARKETING_ONLY,
    PARAMETER_COUNT_MISMATCH,
    TEMPLATE_DISABLED,
    TEMPLATE_NOT_FOUND,
    TEMPLATE_PAUSED,
    GraphError,
)
from wagate.domain.requests import BodyComponent, Component

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


@dataclass(frozen=True, slots=True)
class Template:
    """One template of one WABA."""

    id: str
    name: str
    language: str
    category: str
    status: str
    components: tuple[dict[str, Any], ...]
    parameter_format: Literal["POSITIONAL", "NAMED"] = "POSITIONAL"


def template_from_meta(entry: Mapping[str, Any]) -> Template:
    """A template from one entry of Meta's list."""
    try:
        components = tuple(dict(c) for c in entry.get("components") or ())
        fmt = entry.get("parameter_format") or "POSITIONAL"
        return Template(
            id=str(entry["id"]),
            name=str(entry["name"]),
            language=str(entry["language"]),
            category=str(entry["category"]).upper(),
            status=str(entry["status"]).upper(),
            components=components,
            parameter_format="NAMED" if fmt == "NAMED" else "POSITIONAL",
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a template: {exc}") from None


def template_json(template: Template) -> dict[str, Any]:
    """Meta's JSON of a template."""
    return {
        "name": template.name,
        "parameter_format": template.parameter_format,
        "components": list(template.components),
        "language": template.language,
        "status": template.status,
        "category": template.category,
        "id": template.id,
    }


def check_template(template: Template | None, name: str, language: str) -> Template:
    """The template a marketing send may use, or Meta's error."""
    if template is None or template.status not in ("APPROVED", "PAUSED", "DISABLED"):
        raise GraphError(
            TEMPLATE_NOT_FOUND,
            f"template name ({name}) does not exist in {language} (or is not approved)",
            http_status=404,
        )
    if template.status == "PAUSED":
        raise GraphError(TEMPLATE_PAUSED, f"Template {name} ({language}) is paused")
    if template.status == "DISABLED":
        raise GraphError(TEMPLATE_DISABLED, f"Template {name} ({language}) is disabled")
    if template.category != "MARKETING":
        raise GraphError(MARKETING_ONLY, f"Template {name} is a {template.category} template")
    return template


def check_components(template: Template, components: list[Component]) -> None:
    """The parameters match the template."""
    expected = 0
    for c in template.components:
        if str(c.get("type", "")).upper() == "BODY":
            expected = len(set(_PLACEHOLDER.findall(str(c.get("text", "")))))
    body = next((c for c in components if isinstance(c, BodyComponent)), None)
    got = len(body.parameters) if body else 0
    if got != expected:
        raise GraphError(PARAMETER_COUNT_MISMATCH, f"body expects {expected} parameters, got {got}")
