"""The read endpoints' side of HTTP: query parameters in, Kapso-style JSON views out."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Literal

import msgspec

from wagate.core.reads import MessageRead, Page
from wagate.domain.errors import invalid_parameter
from wagate.domain.model import STATUSES, MessageQuery, Status, StoredMessage
from wagate.domain.requests import MarketingMessageRequest, Template
from wagate.domain.sanitise import usable_wamid
from wagate.domain.statuses import TimelineEntry

_request_decoder = msgspec.json.Decoder(MarketingMessageRequest)
# Times and cursors are stored as signed 64-bit integers; larger values are refused.
_INT64 = range(-(2**63), 2**63)


class MessageStatusView(msgspec.Struct, omit_defaults=True):
    """One step of a message's timeline, with Meta's pricing and errors when it sent them."""

    status: Status
    timestamp: str
    pricing: dict[str, Any] | None = None
    errors: list[dict[str, Any]] | None = None


class MessageErrorView(msgspec.Struct, omit_defaults=True):
    """Why a message failed, in Meta's words."""

    code: int
    title: str
    message: str
    error_data: dict[str, str] | None = None


class LastErrorView(msgspec.Struct):
    """The latest upstream error of a message that retries or failed; `at` in Unix seconds."""

    code: int
    title: str
    message: str
    at: str


class MessageView(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A stored message as the read endpoints show it."""

    id: str
    # No defaults: omit_defaults would otherwise leave these constant fields out.
    messaging_product: Literal["whatsapp"]
    recipient_type: Literal["individual"]
    to: str | None = None
    recipient: str | None = None
    input: str
    type: Literal["template"]
    template: Template
    timestamp: str
    status: Status
    statuses: list[MessageStatusView]
    # No defaults: shown as null rather than left out.
    upstream_wamid: str | None
    last_error: LastErrorView | None
    errors: list[MessageErrorView] | None = None
    biz_opaque_callback_data: str | None = None
    phone_number_id: str


class Cursors(msgspec.Struct, omit_defaults=True):
    """Opaque keyset cursors: `before` is the first item, `after` the last."""

    before: str | None = None
    after: str | None = None


class Paging(msgspec.Struct, omit_defaults=True):
    """Graph-style paging: cursors and, when there are more, links."""

    cursors: Cursors
    next: str | None = None
    previous: str | None = None


class MessagePage(msgspec.Struct):
    """A page of messages."""

    data: list[MessageView]
    paging: Paging


_json = msgspec.json.Decoder()


def _status_view(entry: TimelineEntry) -> MessageStatusView:
    return MessageStatusView(
        status=entry.status,
        timestamp=str(entry.timestamp_ms // 1000),
        pricing=_json.decode(entry.pricing) if entry.pricing else None,
        errors=_json.decode(entry.errors) if entry.errors else None,
    )


def last_error_view(message: StoredMessage) -> LastErrorView | None:
    """What went wrong last: while a message waits to be retried, the upstream error that
    put it back; once it failed, the latest upstream error (else the one it failed with).

    None while nothing went wrong and once Meta accepted the message.
    """
    if message.status not in ("pending", "failed"):
        return None
    if message.last_error_code is not None:
        code, title = message.last_error_code, message.last_error_title or ""
        details, at = message.last_error_details, message.last_error_at or message.updated_at
    elif message.status == "failed" and message.error_code is not None:
        code, title = message.error_code, message.error_title or ""
        details, at = message.error_details, message.updated_at
    else:
        return None
    return LastErrorView(code=code, title=title, message=details or title, at=str(at // 1000))


def message_view(read: MessageRead) -> MessageView:
    """The read view of a stored message, with its timeline."""
    message = read.message
    request = _request_decoder.decode(message.request)
    errors = None
    if message.status == "failed" and message.error_code is not None:
        title = message.error_title or ""
        errors = [
            MessageErrorView(
                code=message.error_code,
                title=title,
                message=title,
                error_data={"details": message.error_details} if message.error_details else None,
            )
        ]
    phone = message.recipient_kind == "phone"
    return MessageView(
        id=message.id,
        messaging_product="whatsapp",
        recipient_type="individual",
        type="template",
        to=message.recipient if phone else None,
        recipient=None if phone else message.recipient,
        input=message.recipient_input,
        template=request.template,
        timestamp=str(message.created_at // 1000),
        status=message.status,
        statuses=[_status_view(entry) for entry in read.timeline],
        upstream_wamid=message.upstream_wamid,
        last_error=last_error_view(message),
        errors=errors,
        biz_opaque_callback_data=message.biz_opaque_callback_data,
        phone_number_id=message.phone_number_id,
    )


def encode_cursor(seq: int) -> str:
    """An opaque cursor for a position in the listing."""
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, name: str) -> int:
    """The position a cursor stands for, or a code 100 error."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind == "seq" and value.isascii() and value.isdigit() and int(value) in _INT64:
            return int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise invalid_parameter(f"`{name}` is not a cursor this API returned: {cursor!r}")


def parse_time(value: str, name: str) -> int:
    """Unix seconds or ISO 8601 as Unix milliseconds, or a code 100 error."""
    text = value.strip()
    try:
        if text.lstrip("-").isascii() and text.lstrip("-").isdigit():
            millis = int(text) * 1000
            if millis not in _INT64:
                raise ValueError(text)
            return millis
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid_parameter(
            f"`{name}` must be Unix seconds or an ISO 8601 time, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        raise invalid_parameter(f"`{name}` needs a time zone (e.g. 2026-11-23T10:00:00Z)")
    return int(moment.timestamp() * 1000)


def _until(value: str) -> int:
    """`until` is inclusive: a whole-second time covers that entire second."""
    millis = parse_time(value, "until")
    return min(millis + 999, _INT64[-1]) if millis % 1000 == 0 else millis


def message_query(phone_number_id: str, params: dict[str, str]) -> MessageQuery:
    """The listing query from the request's query parameters, each checked."""
    known = {
        "status",
        "upstream_wamid",
        "since",
        "until",
        "limit",
        "before",
        "after",
        "fields",
        "access_token",
    }
    unknown = sorted(set(params) - known)
    if unknown:
        raise invalid_parameter(f"Unknown query parameter(s): {', '.join(unknown)}")
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise invalid_parameter(f"`status` must be one of {', '.join(STATUSES)}, got {status!r}")
    limit_text = params.get("limit", "20")
    digits = limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 10
    if not digits or not 1 <= int(limit_text) <= 100:
        raise invalid_parameter(f"`limit` must be a whole number from 1 to 100, got {limit_text!r}")
    if "before" in params and "after" in params:
        raise invalid_parameter("Send `before` or `after`, not both")
    return MessageQuery(
        phone_number_id=phone_number_id,
        limit=int(limit_text),
        status=status,
        upstream_wamid=_upstream_wamid(params.get("upstream_wamid")),
        since=parse_time(params["since"], "since") if "since" in params else None,
        until=_until(params["until"]) if "until" in params else None,
        after_seq=decode_cursor(params["after"], "after") if "after" in params else None,
        before_seq=decode_cursor(params["before"], "before") if "before" in params else None,
    )


def _upstream_wamid(value: str | None) -> str | None:
    """The `upstream_wamid` filter, or a code 100 error for one no message can have."""
    if value is None:
        return None
    if not usable_wamid(value):
        raise invalid_parameter("`upstream_wamid` must be a wamid Meta returned")
    return value


def message_page(
    page: Page, query: MessageQuery, base_url: str, params: dict[str, Any]
) -> MessagePage:
    """The JSON page: its messages, cursors, and links to the pages beside it."""
    has_more = page.has_more
    rows = [read.message for read in page.items]
    backwards = query.before_seq is not None
    paging = Paging(cursors=Cursors())
    if rows:
        first, last = encode_cursor(rows[0].seq), encode_cursor(rows[-1].seq)
        paging.cursors = Cursors(before=first, after=last)
        kept = {k: v for k, v in params.items() if k not in ("before", "after")}
        older = (not backwards and has_more) or backwards
        newer = (backwards and has_more) or query.after_seq is not None
        if older:
            paging.next = _link(base_url, {**kept, "after": last})
        if newer:
            paging.previous = _link(base_url, {**kept, "before": first})
    return MessagePage(data=[message_view(read) for read in page.items], paging=paging)


def _link(base_url: str, params: dict[str, Any]) -> str:
    from urllib.parse import urlencode

    return f"{base_url}?{urlencode(params)}"
