"""Administering customer webhook endpoints: what the management API and `wagate webhooks` do.

Every call may be scoped to a project (the API key's): an endpoint of another project's
number then looks missing, exactly as the number itself does (`admin.show_number`).
A secret is shown in full only by the call that made it (create, or an update that
rotates it); every other answer carries it masked.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from wagate.core.admin import AdminError, show_number
from wagate.domain.model import PhoneNumber
from wagate.domain.notifications import (
    ENDPOINT_KINDS,
    EVENT_TYPES,
    MESSAGE_EVENTS,
    ROTATION_GRACE_S,
    AttemptView,
    DeliveryState,
    DeliveryView,
    EndpointKind,
    EventType,
    WebhookEndpoint,
)
from wagate.domain.notify_formats import STANDARD_PREFIX, mask_secret, new_secret, webhook_test_data
from wagate.domain.ssrf import check_url
from wagate.ports import Admin, Clock, Notifications, WebhookEndpoints

DEFAULT_EVENTS: tuple[EventType, ...] = tuple(MESSAGE_EVENTS.values())
DELIVERY_STATES: tuple[DeliveryState, ...] = ("pending", "delivering", "delivered", "dead")
MAX_HEADERS = 20
MAX_HEADER_VALUE_CHARS = 4096
# An HMAC key shorter than this is guessable; longer ones buy nothing and bloat rows.
MIN_SECRET_CHARS, MAX_SECRET_CHARS = 16, 256
# Standard Webhooks: the key (after `whsec_`) is 24 to 64 bytes, base64-encoded.
MIN_STANDARD_KEY_BYTES, MAX_STANDARD_KEY_BYTES = 24, 64
MAX_PAGE = 100
# RFC 9110 `token`: what a header name may be.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Headers the formats set or a receiver authenticates by, and those that frame the request:
# a custom header must not be able to forge or break any of them.
_RESERVED_NAMES = frozenset(
    {
        "content-type",
        "x-idempotency-key",
        "x-hub-signature-256",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "x-webhook-event",
        "x-webhook-signature",
        "x-webhook-payload-version",
    }
)
# Standard Webhooks' own headers; other `X-Webhook-*` names are free (Kapso's own example
# endpoint sends `X-Webhook-Source: kapso`), the formats never let one replace theirs.
_RESERVED_PREFIXES = ("webhook-",)


class WebhookNotFound(AdminError):
    """No such webhook (or, for a project-scoped caller, not one of its numbers')."""


@dataclass(frozen=True, slots=True)
class ShownWebhook:
    """An endpoint with its secret as it may be shown: in full only when just made."""

    endpoint: WebhookEndpoint
    secret_key: str
    secret_is_new: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    """A page of deliveries, newest first; `before` (a seq) asks for the next, older page."""

    deliveries: list[DeliveryView]
    before: int | None


def _now_ms(clock: Clock) -> int:
    return int(clock.now() * 1000)


def _shown(endpoint: WebhookEndpoint, *, new_secret_shown: bool = False) -> ShownWebhook:
    secret = endpoint.secret if new_secret_shown else mask_secret(endpoint.secret)
    return ShownWebhook(endpoint, secret, new_secret_shown)


# ---- validation --------------------------------------------------------------------


def check_webhook_url(url: str) -> str:
    """`url` if it may be a webhook URL, else an AdminError saying why."""
    reason = check_url(url)
    if reason is not None:
        raise AdminError(f"url: {reason}")
    return url


def check_kind(kind: str) -> EndpointKind:
    """`kind` as an endpoint kind, else an AdminError naming the kinds."""
    for known in ENDPOINT_KINDS:
        if kind == known:
            return known
    raise AdminError(f"kind must be one of {', '.join(ENDPOINT_KINDS)}, got {kind!r}")


def check_events(events: Iterable[str]) -> tuple[EventType, ...]:
    """A non-empty set of known event types, in the catalogue's order."""
    wanted = list(events)
    unknown = [event for event in wanted if event not in EVENT_TYPES]
    if unknown:
        raise AdminError(
            f"unknown event(s) {', '.join(map(repr, unknown))}; known: {', '.join(EVENT_TYPES)}"
        )
    if not wanted:
        raise AdminError(f"events must name at least one of {', '.join(EVENT_TYPES)}")
    return tuple(event for event in EVENT_TYPES if event in wanted)


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Custom headers a webhook may carry: at most 20, valid names, none of ours."""
    if len(headers) > MAX_HEADERS:
        raise AdminError(f"headers: at most {MAX_HEADERS}, got {len(headers)}")
    seen: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if not _TOKEN.match(name):
            raise AdminError(f"headers: {name!r} is not a valid HTTP header name")
        if lower in _RESERVED_NAMES or lower.startswith(_RESERVED_PREFIXES):
            raise AdminError(
                f"headers: {name!r} is set by wagate itself (Content-Type, X-Webhook-*,"
                " X-Idempotency-Key, X-Hub-Signature-256, webhook-*) and cannot be replaced"
            )
        if lower in seen:
            raise AdminError(f"headers: {name!r} is given twice")
        seen.add(lower)
        # Printable ASCII only: a CR or LF would smuggle a header of its own.
        if len(value) > MAX_HEADER_VALUE_CHARS or not all(" " <= c <= "~" for c in value):
            raise AdminError(
                f"headers: the value of {name!r} must be printable ASCII, at most"
                f" {MAX_HEADER_VALUE_CHARS} characters"
            )
    return dict(headers)


def check_secret(secret: str, kind: EndpointKind) -> str:
    """`secret` if it can sign `kind`'s webhooks, else an AdminError saying what it must be."""
    if kind == "standard":
        encoded = secret.removeprefix(STANDARD_PREFIX)
        try:
            key = base64.b64decode(encoded, validate=True) if secret != encoded else b""
        except (binascii.Error, ValueError):
            key = b""
        if not MIN_STANDARD_KEY_BYTES <= len(key) <= MAX_STANDARD_KEY_BYTES:
            raise AdminError(
                "secret_key of a standard endpoint must be `whsec_` and the base64 of"
                f" {MIN_STANDARD_KEY_BYTES}-{MAX_STANDARD_KEY_BYTES} random bytes"
                " (leave it out and one is generated)"
            )
        return secret
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS or not all(
        "!" <= c <= "~" for c in secret
    ):
        raise AdminError(
            f"secret_key must be {MIN_SECRET_CHARS}-{MAX_SECRET_CHARS} printable ASCII characters"
            " without spaces (leave it out and one is generated)"
        )
    return secret


def _secret_fits(secret: str, kind: EndpointKind) -> bool:
    try:
        check_secret(secret, kind)
    except AdminError:
        return False
    return True


# ---- scoping -----------------------------------------------------------------------


async def _number(numbers: Admin, phone_number_id: str, project_id: str | None) -> PhoneNumber:
    return await show_number(numbers, phone_number_id, project_id)


async def find_webhook(
    endpoints: WebhookEndpoints,
    webhook_id: str,
    *,
    project_id: str | None = None,
    phone_number_id: str | None = None,
) -> WebhookEndpoint:
    """A webhook, if it is the project's (and the number's, when given); else WebhookNotFound."""
    endpoint = await endpoints.get_endpoint(webhook_id)
    if (
        endpoint is None
        or (project_id is not None and endpoint.project_id != project_id)
        or (phone_number_id is not None and endpoint.phone_number_id != phone_number_id)
    ):
        raise WebhookNotFound(f"no webhook {webhook_id!r} (see `wagate webhooks list`)")
    return endpoint


# ---- endpoints ---------------------------------------------------------------------


async def create_webhook(
    numbers: Admin,
    endpoints: WebhookEndpoints,
    clock: Clock,
    *,
    phone_number_id: str,
    url: str,
    kind: str = "kapso",
    events: Sequence[str] | None = None,
    active: bool = True,
    headers: Mapping[str, str] | None = None,
    secret_key: str | None = None,
    project_id: str | None = None,
) -> ShownWebhook:
    """A new endpoint of a number; its secret (given or generated) is shown in full, once."""
    checked_kind = check_kind(kind)
    checked_url = check_webhook_url(url)
    checked_events = DEFAULT_EVENTS if events is None else check_events(events)
    checked_headers = check_headers(headers or {})
    secret = (
        new_secret(checked_kind) if secret_key is None else check_secret(secret_key, checked_kind)
    )
    number = await _number(numbers, phone_number_id, project_id)
    now = _now_ms(clock)
    endpoint = WebhookEndpoint(
        id="whk_" + secrets.token_hex(8),
        project_id=number.project_id,
        phone_number_id=number.phone_number_id,
        url=checked_url,
        kind=checked_kind,
        events=checked_events,
        active=active,
        secret=secret,
        headers=checked_headers,
        created_at=now,
        updated_at=now,
    )
    try:
        await endpoints.add_endpoint(endpoint)
    except ValueError as exc:
        # The number went away between the check and the insert.
        raise AdminError(str(exc)) from None
    return _shown(endpoint, new_secret_shown=True)


async def list_webhooks(
    numbers: Admin,
    endpoints: WebhookEndpoints,
    phone_number_id: str,
    project_id: str | None = None,
) -> list[ShownWebhook]:
    """A number's endpoints, oldest first, secrets masked."""
    await _number(numbers, phone_number_id, project_id)
    return [_shown(endpoint) for endpoint in await endpoints.list_endpoints(phone_number_id)]


async def show_webhook(
    endpoints: WebhookEndpoints,
    webhook_id: str,
    *,
    project_id: str | None = None,
    phone_number_id: str | None = None,
) -> ShownWebhook:
    """One endpoint, secret masked."""
    return _shown(
        await find_webhook(
            endpoints, webhook_id, project_id=project_id, phone_number_id=phone_number_id
        )
    )


async def update_webhook(
    endpoints: WebhookEndpoints,
    clock: Clock,
    webhook_id: str,
    *,
    url: str | None = None,
    kind: str | None = None,
    events: Sequence[str] | None = None,
    active: bool | None = None,
    headers: Mapping[str, str] | None = None,
    secret_key: str | None = None,
    rotate_secret: bool = False,
    project_id: str | None = None,
    phone_number_id: str | None = None,
) -> ShownWebhook:
    """Change what is given; a new secret (given, or generated by `rotate_secret`) is shown.

    A standard endpoint's old secret keeps signing beside the new one for
    ROTATION_GRACE_S, so receivers can switch without losing a webhook; Kapso's and
    Meta's formats carry one signature, so theirs is replaced at once. A kind whose
    secret format the old secret does not fit (to `standard`) gets a generated one.
    """
    if secret_key is not None and rotate_secret:
        raise AdminError("give a new secret_key or ask for a generated one, not both")
    given = (url, kind, events, active, headers, secret_key)
    if all(value is None for value in given) and not rotate_secret:
        raise AdminError("nothing to change: give url, kind, events, active, headers or secret_key")
    endpoint = await find_webhook(
        endpoints, webhook_id, project_id=project_id, phone_number_id=phone_number_id
    )
    new_kind = endpoint.kind if kind is None else check_kind(kind)
    changed = dataclasses.replace(
        endpoint,
        url=endpoint.url if url is None else check_webhook_url(url),
        kind=new_kind,
        events=endpoint.events if events is None else check_events(events),
        active=endpoint.active if active is None else active,
        headers=endpoint.headers if headers is None else check_headers(headers),
        updated_at=_now_ms(clock),
    )
    secret: str | None = None
    if secret_key is not None:
        secret = check_secret(secret_key, new_kind)
    elif rotate_secret or not _secret_fits(endpoint.secret, new_kind):
        secret = new_secret(new_kind)
    rotated = secret is not None and secret != endpoint.secret
    updated = _with_secret(endpoint, changed, secret if rotated else None)
    if not await endpoints.update_endpoint(updated):
        raise WebhookNotFound(f"no webhook {webhook_id!r} (see `wagate webhooks list`)")
    return _shown(updated, new_secret_shown=rotated)


def _with_secret(
    before: WebhookEndpoint, changed: WebhookEndpoint, secret: str | None
) -> WebhookEndpoint:
    """`changed` signing with `secret` (None: the same one). The old secret signs on beside a
    new one only between two standard secrets, and only for ROTATION_GRACE_S."""
    if secret is None:
        if changed.kind == "standard":
            return changed
        return dataclasses.replace(changed, previous_secret=None, previous_secret_until=None)
    if changed.kind == "standard" and before.kind == "standard":
        return dataclasses.replace(
            changed,
            secret=secret,
            previous_secret=before.secret,
            previous_secret_until=changed.updated_at + int(ROTATION_GRACE_S * 1000),
        )
    return dataclasses.replace(
        changed, secret=secret, previous_secret=None, previous_secret_until=None
    )


async def remove_webhook(
    endpoints: WebhookEndpoints,
    webhook_id: str,
    *,
    project_id: str | None = None,
    phone_number_id: str | None = None,
) -> WebhookEndpoint:
    """Delete an endpoint with its deliveries and attempts."""
    endpoint = await find_webhook(
        endpoints, webhook_id, project_id=project_id, phone_number_id=phone_number_id
    )
    if not await endpoints.remove_endpoint(webhook_id):
        raise WebhookNotFound(f"no webhook {webhook_id!r} (see `wagate webhooks list`)")
    return endpoint


async def pause_webhook(
    endpoints: WebhookEndpoints,
    notifications: Notifications,
    clock: Clock,
    webhook_id: str,
    *,
    project_id: str | None = None,
    phone_number_id: str | None = None,
) -> ShownWebhook:
    """Hold an endpoint's deliveries (they wait, nothing is lost); pausing twice is harmless."""
    endpoint = await find_webhook(
        endpoints, webhook_id, project_id=project_id, phone_number_id=phone_number_id
    )
    await notifications.pause_endpoint(endpoint.id, _now_ms(clock))
    return await show_webhook(endpoints, webhook_id)


async def resume_webhook(
    endpoints: WebhookEndpoints,
    clock: Clock,
    webhook_id: str,
    *,
    project_id: str | None = None,
    phone_number_id: str | None = None,
) -> ShownWebhook:
    """Let a paused endpoint's waiting deliveries go now; resuming a running one is harmless."""
    endpoint = await find_webhook(
        endpoints, webhook_id, project_id=project_id, phone_number_id=phone_number_id
    )
    if endpoint.paused_at is None:
        return _shown(endpoint)
    # Its failing streak is forgiven too: else the next failure would pause it at once.
    resumed = dataclasses.replace(
        endpoint, paused_at=None, failing_since=None, updated_at=_now_ms(clock)
    )
    if not await endpoints.update_endpoint(resumed):
        raise WebhookNotFound(f"no webhook {webhook_id!r} (see `wagate webhooks list`)")
    return _shown(resumed)


# ---- deliveries --------------------------------------------------------------------


async def send_test(
    numbers: Admin,
    endpoints: WebhookEndpoints,
    notifications: Notifications,
    clock: Clock,
    webhook_id: str,
    *,
    project_id: str | None = None,
    phone_number_id: str | None = None,
) -> str:
    """Queue a `whatsapp.webhook.test` event for one endpoint; returns its delivery id.

    A paused endpoint gets it when it resumes; an inactive one never would, so it is
    refused.
    """
    endpoint = await find_webhook(
        endpoints, webhook_id, project_id=project_id, phone_number_id=phone_number_id
    )
    if not endpoint.active:
        raise AdminError(f"webhook {webhook_id} is inactive: activate it to test it")
    number = await _number(numbers, endpoint.phone_number_id, None)
    delivery_id = f"evt_{uuid.uuid4().hex}"
    data = webhook_test_data(number.waba_id, number.phone_number_id)
    if not await notifications.add_test_delivery(endpoint.id, delivery_id, data, _now_ms(clock)):
        raise WebhookNotFound(f"no webhook {webhook_id!r} (see `wagate webhooks list`)")
    return delivery_id


def check_state(state: str | None) -> DeliveryState | None:
    """A delivery state filter (None: every state), else an AdminError naming the states."""
    if state is None:
        return None
    for known in DELIVERY_STATES:
        if state == known:
            return known
    raise AdminError(f"state must be one of {', '.join(DELIVERY_STATES)}, got {state!r}")


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise AdminError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return limit


async def list_deliveries(
    endpoints: WebhookEndpoints,
    notifications: Notifications,
    webhook_id: str,
    *,
    state: str | None = None,
    limit: int = 20,
    before: int | None = None,
    project_id: str | None = None,
    phone_number_id: str | None = None,
) -> DeliveryPage:
    """A page of an endpoint's deliveries, newest first; `state="dead"`: its dead letters."""
    checked_state = check_state(state)
    _check_limit(limit)
    endpoint = await find_webhook(
        endpoints, webhook_id, project_id=project_id, phone_number_id=phone_number_id
    )
    found = await notifications.list_deliveries(
        endpoint.id, state=checked_state, limit=limit, before_seq=before
    )
    return DeliveryPage(found, found[-1].seq if len(found) == limit else None)


async def list_attempts(
    endpoints: WebhookEndpoints,
    notifications: Notifications,
    webhook_id: str,
    *,
    limit: int = 20,
    before: int | None = None,
    project_id: str | None = None,
    phone_number_id: str | None = None,
) -> list[AttemptView]:
    """An endpoint's attempts, newest first."""
    _check_limit(limit)
    endpoint = await find_webhook(
        endpoints, webhook_id, project_id=project_id, phone_number_id=phone_number_id
    )
    return await notifications.list_attempts(endpoint.id, limit=limit, before_seq=before)


async def replay(
    endpoints: WebhookEndpoints,
    notifications: Notifications,
    clock: Clock,
    webhook_id: str,
    delivery_id: str | None = None,
    *,
    project_id: str | None = None,
    phone_number_id: str | None = None,
) -> int:
    """Send dead deliveries again (one, or all when `delivery_id` is None); how many.

    Naming a delivery that is not dead is a mistake to be told of; replaying "all"
    when none is dead is not.
    """
    endpoint = await find_webhook(
        endpoints, webhook_id, project_id=project_id, phone_number_id=phone_number_id
    )
    replayed = await notifications.replay(endpoint.id, delivery_id, _now_ms(clock))
    if delivery_id is not None and replayed == 0:
        raise AdminError(
            f"webhook {webhook_id} has no dead delivery {delivery_id!r}"
            ": the dead ones are listed under the deliveries in state dead"
        )
    return replayed
