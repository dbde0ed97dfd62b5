"""Statuses back from Meta: check the signature, then store each update once, forward only."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Protocol

import msgspec

from wagate.domain.errors import (
    INVALID_ACCESS_TOKEN,
    INVALID_PARAMETER,
    PERMISSION_DENIED,
    GraphError,
)
from wagate.domain.model import STATUSES, Status
from wagate.domain.statuses import (
    EventRow,
    IngestResult,
    PreferenceRow,
    StatusRow,
    status_row,
)
from wagate.domain.template_events import TEMPLATE_FIELDS, TemplateUpdate, status_after
from wagate.domain.webhooks import (
    WebhookPayload,
    decode_payload,
    signature_matches,
    timestamp_ms,
)
from wagate.ports import Clock, NotifySignal, StatusStore


class RecipientChanges(Protocol):
    """Where opt-outs and limits the ingest wrote go (the send checks' memory)."""

    async def reread(self, keys: Sequence[tuple[str, str]]) -> None:
        """Read these (waba_id, recipient) again."""
        ...


class TemplateChanges(Protocol):
    """Where Meta's template webhooks go (the send checks' templates)."""

    async def apply(self, updates: Sequence[TemplateUpdate], *, sandbox_only: bool) -> int:
        """Store and apply the updates; how many templates changed."""
        ...


log = logging.getLogger("wagate.ingest")
_encoder = msgspec.json.Encoder()
_KNOWN: frozenset[str] = frozenset(STATUSES) - {"pending"}


class Ingestor:
    """Receives Meta's webhook POSTs."""

    def __init__(
        self,
        store: StatusStore,
        clock: Clock,
        app_secret: str,
        sandbox_secret: str = "",
        *,
        notify: NotifySignal | None = None,
        templates: TemplateChanges | None = None,
        recipients: RecipientChanges | None = None,
    ) -> None:
        """Webhooks signed with Meta's `app_secret`, or with the embedded sandbox's secret;
        `notify` is rung when what was stored may have written customer webhooks."""
        self.store = store
        self.clock = clock
        self.app_secret = app_secret
        self.sandbox_secret = sandbox_secret
        self.notify = notify
        self.templates = templates
        self.recipients = recipients

    def verify(
        self, mode: str | None, token: str | None, challenge: str | None, expected: str
    ) -> str:
        """Meta's subscription handshake: the challenge if the token matches, else a 403 error."""
        if mode == "subscribe" and expected and token == expected and challenge is not None:
            return challenge
        raise GraphError(
            PERMISSION_DENIED, "Webhook verification failed: wrong hub.verify_token or hub.mode"
        )

    async def receive(self, body: bytes, signature: str | None) -> IngestResult:
        """Check `X-Hub-Signature-256`, decode, store; nothing is stored if either fails.

        A body signed by the embedded sandbox (not by Meta) is stored only as far
        as it concerns sandbox numbers.
        """
        if signature_matches(body, signature, self.app_secret):
            sandbox_only = False
        elif signature_matches(body, signature, self.sandbox_secret):
            sandbox_only = True
        else:
            raise GraphError(
                INVALID_ACCESS_TOKEN,
                "X-Hub-Signature-256 is missing or does not match the body",
                http_status=401,
            )
        try:
            payload = decode_payload(body)
        except ValueError as exc:
            raise GraphError(
                INVALID_PARAMETER, f"Webhook body is not Meta's payload: {exc}"
            ) from None
        now_ms = int(self.clock.now() * 1000)
        statuses, preferences, events = rows_of(payload, now_ms)
        result = await self.store.ingest(
            statuses, preferences, events, now_ms, sandbox_only=sandbox_only
        )
        if self.notify is not None and result.notified:
            self.notify.ring()
        if result.recipients and self.recipients is not None:
            await self.recipients.reread(result.recipients)
        updates = template_updates(payload, now_ms)
        if updates and self.templates is not None:
            await self.templates.apply(updates, sandbox_only=sandbox_only)
        log.debug(
            "webhook: %d new statuses, %d duplicates, %d messages moved, %d rows refused",
            result.stored,
            result.duplicates,
            result.moved,
            result.rejected,
        )
        return result


def rows_of(
    payload: WebhookPayload, now_ms: int
) -> tuple[list[StatusRow], list[PreferenceRow], list[EventRow]]:
    """The rows a payload stores; unknown fields and unknown status kinds are skipped."""
    statuses: list[StatusRow] = []
    preferences: list[PreferenceRow] = []
    events: list[EventRow] = []
    for entry in payload.entry:
        for change in entry.changes:
            value = change.value
            for update in value.statuses:
                if update.status not in _KNOWN:
                    continue
                statuses.append(
                    status_row(
                        update.id,
                        _status(update.status),
                        timestamp_ms(update.timestamp, now_ms),
                        errors=_json(update.errors),
                        pricing=_json(update.pricing),
                    )
                )
            for preference in value.user_preferences:
                if preference.value not in ("stop", "resume"):
                    continue
                for recipient in (preference.wa_id, preference.user_id):
                    if recipient:
                        preferences.append(
                            PreferenceRow(
                                entry.id,
                                recipient,
                                preference.value,
                                timestamp_ms(preference.timestamp, now_ms),
                            )
                        )
            contact = value.contacts[0] if value.contacts else None
            for action in value.user_actions:
                data = action.marketing_messages_link_click_data or {}
                wamid = data.get("tracking_token") or data.get("message_id")
                action_json = _encoder.encode(action).decode()
                events.append(
                    EventRow(
                        wamid=str(wamid) if wamid else None,
                        kind=action.action_type,
                        recipient=(contact.wa_id or contact.user_id) if contact else None,
                        payload=action_json,
                        timestamp_ms=timestamp_ms(action.timestamp, now_ms),
                        dedupe_key=dedupe_key(
                            action.action_type, data.get("click_id"), action_json
                        ),
                    )
                )
    return statuses, preferences, events


def template_updates(payload: WebhookPayload, now_ms: int) -> list[TemplateUpdate]:
    """The template changes of a payload, in its order (a change without a template id is
    skipped)."""
    updates: list[TemplateUpdate] = []
    for entry in payload.entry:
        for change in entry.changes:
            value = change.value
            if change.field not in TEMPLATE_FIELDS or value.message_template_id is None:
                continue
            updates.append(
                TemplateUpdate(
                    waba_id=entry.id,
                    template_id=str(value.message_template_id),
                    name=value.message_template_name,
                    language=value.message_template_language,
                    status=status_after(value.event) if value.event else None,
                    category=value.new_category.upper() if value.new_category else None,
                    quality=value.new_quality_score,
                    at_ms=now_ms,
                )
            )
    return updates


def dedupe_key(kind: str, click_id: object, payload: str) -> str:
    """What makes an event unique: its kind and Meta's click_id, else the whole action.

    Meta retries a webhook for days; the same click must be stored once.
    """
    identity = str(click_id) if click_id else payload
    return hashlib.sha256(f"{kind}\x00{identity}".encode()).hexdigest()


def _json(value: object) -> str | None:
    return _encoder.encode(value).decode() if value else None


def _status(value: str) -> Status:
    for status in STATUSES:
        if status == value:
            return status
    raise ValueError(value)
