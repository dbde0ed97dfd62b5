"""Webhooks as Meta sends them: batched, signed with the app secret, retried on failure.

Message statuses, opt-outs and clicks on the `messages` and `user_preferences`
fields; template status changes on `message_template_status_update`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import aiohttp
import msgspec

from wagate.adapters.sandbox.outcomes import AcceptedMessage, Update
from wagate.adapters.sandbox.state import SandboxState
from wagate.adapters.sandbox.templates import TemplateEvent
from wagate.domain.errors import HEALTHY_ECOSYSTEM, MARKETING_OPT_OUT, UNDELIVERABLE, kind_of

log = logging.getLogger("wagate.sandbox.webhooks")

_encode = msgspec.json.encode
# The updates that travel in `statuses`; the others are changes of their own.
STATUS_KINDS: Final = frozenset({"sent", "delivered", "read", "failed"})
# Marketing Messages API sends are billed per message as `marketing_lite`. Meta's
# per-message pricing (July 2025 on) drops the `conversation` object, so none is sent.
PRICING: Final = {
    "billable": True,
    "pricing_model": "PMP",
    "type": "regular",
    "category": "marketing_lite",
}
ERROR_HREF: Final = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
_FAILURE_DETAILS: Final = {
    UNDELIVERABLE: "Message could not be delivered: the recipient cannot receive WhatsApp messages",
    HEALTHY_ECOSYSTEM: (
        "Meta chose not to deliver this message to maintain healthy ecosystem engagement"
    ),
    MARKETING_OPT_OUT: "The recipient has stopped marketing messages from this business",
}


def signature(body: bytes, app_secret: str) -> str:
    """The `X-Hub-Signature-256` header value: `sha256=` and the hex HMAC of the raw body."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _metadata(message: AcceptedMessage) -> dict[str, str]:
    return {
        "display_phone_number": message.display_phone_number,
        "phone_number_id": message.phone_number_id,
    }


def _contact(message: AcceptedMessage) -> dict[str, str]:
    if message.kind == "phone":
        return {"wa_id": message.address}
    return {"user_id": message.address}


def status_json(update: Update) -> dict[str, Any]:
    """One entry of `statuses`."""
    message, step = update.message, update.step
    status: dict[str, Any] = {
        "id": message.wamid,
        "status": step.kind,
        "timestamp": str(int(update.due)),
        "recipient_id": message.address if message.kind == "phone" else "",
    }
    if message.kind == "bsuid":
        status["recipient_user_id"] = message.address
    if message.biz_opaque_callback_data is not None:
        status["biz_opaque_callback_data"] = message.biz_opaque_callback_data
    if step.code is not None:
        title = kind_of(step.code).title
        status["errors"] = [
            {
                "code": step.code,
                "title": title,
                "message": title,
                "error_data": {"details": _FAILURE_DETAILS.get(step.code, title)},
                "href": ERROR_HREF,
            }
        ]
    else:
        status["pricing"] = PRICING
    return status


def _preference_json(update: Update) -> dict[str, Any]:
    # Meta's example shows a numeric timestamp here, unlike the strings of statuses.
    return {
        **_contact(update.message),
        "detail": "User requested to stop marketing messages",
        "category": "marketing_messages",
        "value": "stop",
        "timestamp": int(update.due),
    }


def _click_json(update: Update) -> dict[str, Any]:
    # The exact shape of click payloads is uncertain: Meta documents the fields
    # (action_type, click_component, click_id, tracking_token) but not a full example.
    # The tracking token here is the wamid, so a receiver can tie the click to a message.
    message = update.message
    return {
        "action_type": "marketing_messages_link_click",
        "timestamp": int(update.due),
        "marketing_messages_link_click_data": {
            "click_component": "cta",
            "click_id": f"click.{message.wamid[6:]}",
            "tracking_token": message.wamid,
        },
    }


def _envelope(message: AcceptedMessage, field: str, value: dict[str, Any]) -> bytes:
    value = {"messaging_product": "whatsapp", "metadata": _metadata(message), **value}
    return _encode(
        {
            "object": "whatsapp_business_account",
            "entry": [{"id": message.waba_id, "changes": [{"field": field, "value": value}]}],
        }
    )


def template_status_body(event: TemplateEvent) -> bytes:
    """Meta's `message_template_status_update` webhook for one template status change."""
    value: dict[str, Any] = {
        "event": event.event,
        # A number in Meta's payload, though its template list gives ids as strings.
        "message_template_id": int(event.template_id)
        if event.template_id.isdigit()
        else event.template_id,
        "message_template_name": event.name,
        "message_template_language": event.language,
        "reason": event.reason,
        "message_template_category": event.category,
    }
    if event.event == "DISABLED":
        value["disable_info"] = {"disable_date": int(event.at)}
    if event.title is not None:
        value["other_info"] = {"title": event.title, "description": event.description}
    return _encode(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": event.waba_id,
                    "time": int(event.at),
                    "changes": [{"field": "message_template_status_update", "value": value}],
                }
            ],
        }
    )


def build_posts(updates: list[Update], batch: int) -> Iterator[tuple[bytes, int]]:
    """Webhook bodies (and how many updates each holds): one number per body, <= `batch` statuses.

    Opt-outs and clicks go in bodies of their own, one change per body, so a
    receiver that reads only the first change still sees everything.
    """
    by_number: dict[str, list[Update]] = {}
    for update in updates:
        by_number.setdefault(update.message.phone_number_id, []).append(update)
    for group in by_number.values():
        first = group[0].message
        statuses = [status_json(u) for u in group if u.step.kind in STATUS_KINDS]
        for start in range(0, len(statuses), batch):
            chunk = statuses[start : start + batch]
            yield _envelope(first, "messages", {"statuses": chunk}), len(chunk)
        stops = [u for u in group if u.step.kind == "user_preferences"]
        if stops:
            yield (
                _envelope(
                    first,
                    "user_preferences",
                    {
                        "contacts": [_contact(u.message) for u in stops],
                        "user_preferences": [_preference_json(u) for u in stops],
                    },
                ),
                len(stops),
            )
        clicks = [u for u in group if u.step.kind == "click"]
        if clicks:
            yield (
                _envelope(
                    first,
                    "messages",
                    {
                        "contacts": [_contact(u.message) for u in clicks],
                        "user_actions": [_click_json(u) for u in clicks],
                    },
                ),
                len(clicks),
            )


class WebhookSender:
    """Posts due updates to the callback URL every flush interval, in order, batched.

    Bodies are posted one after another, so a healthy receiver sees a message's
    updates in order; a failed body is retried in the background with backoff
    while later bodies go on, so after a failure updates can arrive out of order,
    as they can from Meta.
    """

    def __init__(self, state: SandboxState, url: str) -> None:
        """A sender for `state`'s schedule; nothing runs until `start`."""
        self.state = state
        self.url = url
        self.config = state.config
        # Set by a host that receives the webhooks in the same process (the gateway's
        # embedded sandbox): called with each signed body and its X-Hub-Signature-256
        # instead of a POST; returning is a 2xx, raising a failure (retried as one).
        self.deliver: Callable[[bytes, str], Awaitable[None]] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Task[None]] = set()

    @property
    def started(self) -> bool:
        """Whether the flush loop runs."""
        return self._loop_task is not None

    def start(self) -> None:
        """Start the flush loop on the running event loop (idempotent)."""
        if self._loop_task is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout),
            headers={"User-Agent": "facebookexternalua"},
        )
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        """Stop the flush loop and pending retries, and close the HTTP session."""
        tasks = [t for t in (self._loop_task, *self._retries) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop_task = None
        self._retries.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            try:
                await self.flush()
            except Exception:
                log.exception("webhook flush failed")

    async def flush(self) -> None:
        """Post every update that is due now, template status changes first."""
        now = self.state.clock.now()
        templates = self.state.templates
        # Created templates are approved on time here, whether anyone reads them or not.
        templates.approve_due(now)
        for event in templates.take_events():
            body = template_status_body(event)
            if not await self._post(body, 1):
                self._spawn_retry(body, 1)
        updates = self.state.schedule.take_due(now)
        for body, count in build_posts(updates, self.config.webhook_batch):
            if not await self._post(body, count):
                self._spawn_retry(body, count)

    async def _post(self, body: bytes, count: int) -> bool:
        assert self._session is not None, "start() the sender first"
        signed = signature(body, self.config.app_secret)
        if self.deliver is not None:
            ok = await self._deliver(self.deliver, body, signed)
        else:
            ok = await self._post_http(self._session, body, signed)
        if ok:
            counters = self.state.webhook_counters
            counters.posts += 1
            counters.updates += count
        return ok

    async def _deliver(
        self, deliver: Callable[[bytes, str], Awaitable[None]], body: bytes, signed: str
    ) -> bool:
        try:
            await deliver(body, signed)
        except Exception as exc:  # what a 4xx or 5xx would be: retried with backoff
            log.warning("webhook to %s (in process) failed: %r", self.url, exc)
            return False
        return True

    async def _post_http(self, session: aiohttp.ClientSession, body: bytes, signed: str) -> bool:
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signed}
        try:
            async with session.post(self.url, data=body, headers=headers) as response:
                await response.read()
                ok = 200 <= response.status < 300
                if not ok:
                    log.warning("webhook POST to %s answered %s", self.url, response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("webhook POST to %s failed: %r", self.url, exc)
            ok = False
        return ok

    def _spawn_retry(self, body: bytes, count: int) -> None:
        task = asyncio.get_running_loop().create_task(self._retry(body, count))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _retry(self, body: bytes, count: int) -> None:
        delay = self.config.webhook_backoff
        for _ in range(self.config.webhook_retries):
            await asyncio.sleep(delay)
            self.state.webhook_counters.retries += 1
            if await self._post(body, count):
                return
            delay *= 2
        self.state.webhook_counters.failed_posts += 1
        log.error(
            "webhook POST to %s given up after %d retries", self.url, self.config.webhook_retries
        )
