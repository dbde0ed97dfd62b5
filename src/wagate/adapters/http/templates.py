"""The template endpoints on the proxy base, as Kapso serves them: list (from the
gateway's own copy), create and delete (passed to the upstream, then listed again).

`GET|POST|DELETE /meta/whatsapp/{version}/{waba_id}/message_templates`, with the send
endpoint's key: a key sees only the WABAs of its project's numbers (another project's
WABA looks like a missing object, code 100 subcode 33).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any, cast

from litestar import Request, Response, delete, get, post

from wagate.adapters.http.bodies import BodyTooLarge, Receive, read_body
from wagate.adapters.http.docs import API_KEY_SECURITY
from wagate.adapters.http.graph import require_graph_version
from wagate.adapters.http.management import ERRORS, page_limit, project_of, services_of
from wagate.core.access import phone_number_not_found
from wagate.domain.errors import SOMETHING_WENT_WRONG, GraphError, invalid_parameter
from wagate.domain.model import PhoneNumber
from wagate.domain.templates import Template, template_json
from wagate.ports import TemplatesUnavailable, UpstreamAnswer

TEMPLATES_PATH = "/meta/whatsapp/{version:str}/{waba_id:str}/message_templates"
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000


async def _number_of_waba(
    request: Request[Any, Any, Any], version: str, waba_id: str
) -> PhoneNumber:
    """A number of the caller's project on this WABA (its token and upstream reach it)."""
    project_id = await project_of(request)
    require_graph_version(version)
    numbers = await services_of(request).store.list_phone_numbers(project_id)
    for number in numbers:
        if number.waba_id == waba_id:
            return number
    raise phone_number_not_found(waba_id, request.method.lower())


def _cursor(template_id: str) -> str:
    return base64.urlsafe_b64encode(template_id.encode()).decode().rstrip("=")


def _after(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid_parameter(f"Invalid paging cursor {cursor!r}") from None


def _matches(template: Template, filters: dict[str, set[str]]) -> bool:
    values = {
        "name": template.name,
        "status": template.status,
        "category": template.category,
        "language": template.language,
    }
    return all(values[key] in wanted for key, wanted in filters.items())


def _sort_key(template_id: str) -> tuple[int, str]:
    """Meta's ids are numbers: in the order they were made."""
    return (int(template_id), "") if template_id.isdigit() else (0, template_id)


@get(
    TEMPLATES_PATH,
    tags=["templates"],
    summary="List message templates",
    operation_id="listMessageTemplates",
    security=API_KEY_SECURITY,
    responses=ERRORS,
)
async def list_templates(
    request: Request[Any, Any, Any], version: str, waba_id: str
) -> dict[str, Any]:
    """The WABA's templates as the gateway holds them (listed from the upstream, kept current
    by Meta's template webhooks). Filters `name`, `status`, `category`, `language` (comma
    lists); `limit` (1-1000, default 25) and the `after` cursor page through them."""
    number = await _number_of_waba(request, version, waba_id)
    services = services_of(request)
    held = await services.templates.listing(number)
    params = request.query_params
    filters = {
        key: {value.strip() for value in params[key].split(",") if value.strip()}
        for key in ("name", "status", "category", "language")
        if params.get(key)
    }
    for key in ("status", "category"):
        if key in filters:
            filters[key] = {value.upper() for value in filters[key]}
    chosen = sorted((t for t in held if _matches(t, filters)), key=lambda t: _sort_key(t.id))
    after = params.get("after")
    if after:
        after_key = _sort_key(_after(after))
        chosen = [t for t in chosen if _sort_key(t.id) > after_key]
    limit = page_limit(params.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)
    page, more = chosen[:limit], len(chosen) > limit
    answer: dict[str, Any] = {"data": [template_json(t) for t in page]}
    if page:
        cursors = {"before": _cursor(page[0].id), "after": _cursor(page[-1].id)}
        answer["paging"] = {"cursors": cursors}
        if more:
            base = str(request.url).split("?", 1)[0]
            answer["paging"]["next"] = f"{base}?limit={limit}&after={cursors['after']}"
    return answer


async def _raw_body(request: Request[Any, Any, Any]) -> bytes:
    settings = services_of(request).settings
    try:
        return await read_body(
            cast(Receive, request.receive), settings.max_body_bytes, settings.body_timeout_seconds
        )
    except BodyTooLarge:
        raise invalid_parameter(f"Body is larger than {settings.max_body_bytes} bytes") from None


Change = Callable[[str, str, str, str], Awaitable[UpstreamAnswer]]


async def _changed_at_upstream(
    request: Request[Any, Any, Any], number: PhoneNumber, change: Change
) -> Response[bytes]:
    """`change(base_url, version, waba_id, token)` at the number's upstream, its answer
    passed on as it came; on a 200 the WABA is listed again at once."""
    services = services_of(request)
    try:
        answer = await change(
            services.settings.upstream_base(number.upstream),
            services.settings.meta_graph_version,
            number.waba_id,
            number.access_token,
        )
    except TemplatesUnavailable as exc:
        raise GraphError(
            SOMETHING_WENT_WRONG, f"The upstream could not be reached ({exc}); nothing was changed"
        ) from None
    if answer.status == 200:
        await services.templates.refresh(number)
    return Response(content=answer.body, status_code=answer.status, media_type="application/json")


@post(
    TEMPLATES_PATH,
    tags=["templates"],
    summary="Create a message template",
    operation_id="createMessageTemplate",
    security=API_KEY_SECURITY,
    responses=ERRORS,
    status_code=200,
)
async def create_template(
    request: Request[Any, Any, Any], version: str, waba_id: str
) -> Response[bytes]:
    """Create a template at the upstream (Meta's body and answer, unchanged); the gateway
    lists the WABA again, so the new template is held (PENDING until approved)."""
    number = await _number_of_waba(request, version, waba_id)
    body = await _raw_body(request)
    source = services_of(request).template_source
    return await _changed_at_upstream(
        request,
        number,
        lambda base, version, waba, token: source.create_template(base, version, waba, token, body),
    )


@delete(
    TEMPLATES_PATH,
    tags=["templates"],
    summary="Delete a message template",
    operation_id="deleteMessageTemplate",
    security=API_KEY_SECURITY,
    responses=ERRORS,
    status_code=200,
)
async def delete_template(
    request: Request[Any, Any, Any], version: str, waba_id: str
) -> Response[bytes]:
    """Delete a template by `name` (every language), or one of them with `hsm_id`, at the
    upstream; the gateway lists the WABA again, so sends of it are refused at once."""
    number = await _number_of_waba(request, version, waba_id)
    params = request.query_params
    query = {key: params[key] for key in ("name", "hsm_id") if key in params}
    source = services_of(request).template_source
    return await _changed_at_upstream(
        request,
        number,
        lambda base, version, waba, token: source.delete_template(
            base, version, waba, token, query
        ),
    )


TEMPLATE_ROUTES = [list_templates, create_template, delete_template]
