"""The sandbox's in-memory state and its send use case: Meta's checks, limits and counters.

Pure apart from the injected clock (Unix seconds), so limits and approval
delays are tested without sleeping.
"""

from __future__ import annotations

import base64
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec

from wagate.adapters.sandbox.config import SandboxConfig
from wagate.adapters.sandbox.limits import KeyedLimiter
from wagate.adapters.sandbox.memory import Lru
from wagate.adapters.sandbox.outcomes import (
    TRANSIENT_FAILURES,
    AcceptedMessage,
    UpdateSchedule,
    outcome_of,
)
from wagate.adapters.sandbox.templates import TemplateStore
from wagate.domain.errors import (
    INVALID_ACCESS_TOKEN,
    INVALID_PARAMETER,
    INVALID_PARAMETER_VALUE,
    PAIR_RATE_LIMIT,
    SERVICE_UNAVAILABLE,
    THROUGHPUT_RATE_LIMIT,
    GraphError,
)
from wagate.domain.recipients import resolve_recipient
from wagate.domain.requests import Contact, MarketingMessageResponse, MessageRef
from wagate.domain.templates import check_components, check_template
from wagate.domain.validation import decode_request
from wagate.ports import Clock, SystemClock

_encode = msgspec.json.encode
# Meta's phone numbers are at most 15 digits; anything far longer is refused unread.
MAX_TO_LENGTH = 64
# The least burst of a number's own throughput bucket (see SandboxState._own_limit).
OWN_BURST = 2.0
NO_TOKEN = "An access token is required: Authorization: Bearer <token>"


@dataclass(slots=True)
class Counters:
    """Send counters of the whole sandbox or of one phone number."""

    requests: int = 0
    accepted: int = 0
    duplicate_sends: int = 0
    errors: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The counters as `_stats` shows them (error codes as string keys)."""
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "errors": {str(code): n for code, n in sorted(self.errors.items())},
            "duplicate_sends": self.duplicate_sends,
        }


@dataclass(slots=True)
class WebhookCounters:
    """What the webhook sender did: POSTs delivered, updates in them, POSTs given up on."""

    posts: int = 0
    updates: int = 0
    retries: int = 0
    failed_posts: int = 0


@dataclass(frozen=True, slots=True)
class Sent:
    """One accepted send as the operator's `_sends` lists it: when, from which number, to whom."""

    at: float
    phone_number_id: str
    to: str

    def to_json(self) -> dict[str, Any]:
        """The send as `_sends` shows it (`to`: the recipient's digits or BSUID)."""
        return {"at": self.at, "phone_number_id": self.phone_number_id, "to": self.to}


@dataclass(frozen=True, slots=True)
class Number:
    """A business phone number: its WABA and the number shown in webhooks' metadata."""

    waba_id: str
    display_phone_number: str


def display_number_for(phone_number_id: str) -> str:
    """A stable made-up display number (a +1 555 number) for a phone_number_id."""
    digits = "".join(ch for ch in phone_number_id if ch.isdigit())
    return "1555" + digits[-7:].rjust(7, "0")


class SandboxState:
    """Templates, limits, counters and pending status updates of one sandbox."""

    def __init__(self, config: SandboxConfig, clock: Clock | None = None) -> None:
        """Empty state on `clock` (the system's by default); WABAs get templates on first use."""
        self.config = config
        self.clock = clock or SystemClock()
        self.webhooks_enabled = bool(config.webhook_url)
        self.templates = TemplateStore(
            config.approval_delay,
            max_wabas=config.max_wabas,
            max_per_waba=config.max_templates_per_waba,
            max_created=config.max_created_templates,
            record_events=self.webhooks_enabled,
        )
        self.schedule = UpdateSchedule(config.status_delay, config.max_pending_updates)
        self.totals = Counters()
        self.per_number: dict[str, Counters] = {}
        self.webhook_counters = WebhookCounters()
        self._numbers: dict[str, Number] = {}
        # Throughput of the numbers registered with one of their own (msg/s); others: config.mps.
        self._mps: dict[str, float] = {}
        # The last accepted sends, oldest first (what `_sends` lists).
        self.sends: deque[Sent] = deque(maxlen=config.max_remembered_sends)
        self._throughput = KeyedLimiter(config.mps, config.mps)
        self._pairs = KeyedLimiter(config.pair_burst, 1.0 / config.pair_interval)
        # hash of (number, recipient, template payload) of recently accepted sends
        self._sent: Lru[int, bool] = Lru(config.max_remembered_sends)
        self._transient_attempts: Lru[int, int] = Lru(config.max_remembered_sends)
        # A per-process salt keeps wamids unique across sandbox restarts.
        self._wamid_salt = secrets.token_hex(5).upper()
        self._wamid_seq = 0

    # ---- numbers -------------------------------------------------------------------

    def number(self, phone_number_id: str) -> Number:
        """The number's WABA and display number; unregistered numbers are a WABA of their own."""
        number = self._numbers.get(phone_number_id)
        if number is None:
            waba_id = self.config.numbers.get(phone_number_id, phone_number_id)
            number = self.register_number(phone_number_id, waba_id)
        return number

    def register_number(
        self,
        phone_number_id: str,
        waba_id: str,
        display_phone_number: str | None = None,
        mps: float | None = None,
    ) -> Number:
        """Attach a phone number to a WABA (until the next reset); refused beyond the cap.

        `mps` gives the number a throughput of its own (its 130429 and its tier follow
        it); None keeps what it had (the sandbox's `mps` unless registered with one).
        """
        if phone_number_id not in self._numbers and len(self._numbers) >= self.config.max_numbers:
            raise GraphError(
                INVALID_PARAMETER, f"Sandbox limit: at most {self.config.max_numbers} phone numbers"
            )
        number = Number(waba_id, display_phone_number or display_number_for(phone_number_id))
        self._numbers[phone_number_id] = number
        if mps is not None:
            self._mps[phone_number_id] = mps
            self._throughput.forget(phone_number_id)
        return number

    def attach(self, phone_number_id: str, waba_id: str) -> Number:
        """The number, attached to `waba_id` (the gateway's stored WABA of a sandbox number)."""
        number = self._numbers.get(phone_number_id)
        if number is not None and number.waba_id == waba_id:
            return number
        return self.register_number(phone_number_id, waba_id)

    def mps_of(self, phone_number_id: str) -> float:
        """A number's throughput in msg/s: its own if registered with one, else the sandbox's."""
        return self._mps.get(phone_number_id, self.config.mps)

    def _own_limit(self, phone_number_id: str) -> tuple[float, float] | None:
        """(capacity, rate) of a number's own throughput bucket; None: the sandbox's.

        One second of its rate, as for the sandbox's, but never less than OWN_BURST
        messages: a sender pacing at exactly 1 msg/s reaches the sandbox a few
        milliseconds early or late, and a one-message bucket would refuse that jitter
        (Meta's tiers start at 80 msg/s, where one second holds 80).
        """
        mps = self._mps.get(phone_number_id)
        return None if mps is None else (max(OWN_BURST, mps), mps)

    def throughput_level(self, phone_number_id: str) -> str:
        """Meta's throughput level for a number's rate."""
        return "HIGH" if self.mps_of(phone_number_id) >= 1000 else "STANDARD"

    # ---- the send use case ----------------------------------------------------------

    def send(
        self, phone_number_id: str, body: bytes, *, authorized: bool, at: float | None = None
    ) -> MarketingMessageResponse:
        """Check and accept one marketing message, counting it; raise the GraphError Meta would.

        `at` is when the request arrived (default: now): Meta counts a send against
        the limits when it arrives, not when its checks are done, and so does the
        sandbox (a token lookup between the two must not move a send into the next
        second). Per-number counters exist only for numbers a token was accepted
        for, so requests with made-up ids do not grow them.
        """
        self.totals.requests += 1
        counters: Counters | None = None
        try:
            if not authorized:
                raise GraphError(INVALID_ACCESS_TOKEN, NO_TOKEN)
            self.number(phone_number_id)
            counters = self.per_number.get(phone_number_id)
            if counters is None:
                counters = self.per_number[phone_number_id] = Counters()
            counters.requests += 1
            now = self.clock.now() if at is None else at
            response, duplicate = self._accept(phone_number_id, body, now)
        except GraphError as error:
            for each in (self.totals, counters):
                if each is not None:
                    each.errors[error.code] = each.errors.get(error.code, 0) + 1
            raise
        self.totals.accepted += 1
        counters.accepted += 1
        if duplicate:
            self.totals.duplicate_sends += 1
            counters.duplicate_sends += 1
        return response

    def _accept(
        self, phone_number_id: str, body: bytes, now: float
    ) -> tuple[MarketingMessageResponse, bool]:
        request = decode_request(body)
        if request.to is not None and len(request.to) > MAX_TO_LENGTH:
            raise GraphError(
                INVALID_PARAMETER_VALUE,
                f"Parameter to is longer than {MAX_TO_LENGTH} characters: not a phone number",
            )
        recipient = resolve_recipient(request.to, request.recipient)
        number = self.number(phone_number_id)
        name, language = request.template.name, request.template.language.code
        record = self.templates.find(number.waba_id, name, language, now)
        template = check_template(record.template if record else None, name, language)
        check_components(template, request.template.components or [])
        outcome = outcome_of(recipient.address)
        if self.webhooks_enabled and not self.schedule.has_room(outcome):
            raise GraphError(
                SERVICE_UNAVAILABLE, "Sandbox overloaded: too many status updates pending"
            )
        # Only well-formed sends take throughput, so pacing at exactly mps never trips it.
        if not self._throughput.take(phone_number_id, now, self._own_limit(phone_number_id)):
            raise GraphError(
                THROUGHPUT_RATE_LIMIT,
                f"Throughput of {self.mps_of(phone_number_id):g} messages/s exceeded for phone"
                f" number {phone_number_id}",
            )
        address = recipient.address
        payload_key = hash((phone_number_id, address, _encode(request.template)))
        transient = TRANSIENT_FAILURES.get(address[-4:])
        if transient is not None:
            code, times = transient
            attempts = (self._transient_attempts.get(payload_key) or 0) + 1
            self._transient_attempts.put(payload_key, attempts)
            if attempts <= times:
                raise GraphError(code, f"Sandbox: transient failure {attempts} of {times}")
        if not self._pairs.take((phone_number_id, address), now):
            raise GraphError(
                PAIR_RATE_LIMIT,
                "Too many messages sent from the sender phone number to the same recipient"
                " phone number in a short period of time.",
            )
        duplicate = payload_key in self._sent
        self._sent.put(payload_key, True)
        self.sends.append(Sent(now, phone_number_id, address))
        wamid = self._new_wamid(address)
        if self.webhooks_enabled:
            message = AcceptedMessage(
                wamid=wamid,
                phone_number_id=phone_number_id,
                waba_id=number.waba_id,
                display_phone_number=number.display_phone_number,
                address=address,
                kind=recipient.kind,
                biz_opaque_callback_data=request.biz_opaque_callback_data,
                accepted_at=now,
            )
            self.schedule.add(message, outcome)
        contact = (
            Contact(input=recipient.input, wa_id=address)
            if recipient.kind == "phone"
            else Contact(input=recipient.input, user_id=address)
        )
        response = MarketingMessageResponse(contacts=[contact], messages=[MessageRef(id=wamid)])
        return response, duplicate

    def _new_wamid(self, address: str) -> str:
        # Shaped like Meta's: base64 of bytes that hold the recipient and a unique id.
        self._wamid_seq += 1
        raw = f"{address}\x15\x02\x00\x11\x18\x12{self._wamid_salt}{self._wamid_seq:010X}"
        return "wamid." + base64.b64encode(raw.encode()).decode()

    # ---- stats and reset ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The `_stats` document."""
        return {
            **self.totals.to_json(),
            "numbers": {pnid: c.to_json() for pnid, c in self.per_number.items()},
            "webhooks": {
                "enabled": self.webhooks_enabled,
                "posts": self.webhook_counters.posts,
                "updates": self.webhook_counters.updates,
                "retries": self.webhook_counters.retries,
                "failed_posts": self.webhook_counters.failed_posts,
                "pending_updates": len(self.schedule),
            },
        }

    def reset(self) -> None:
        """Forget counters, templates, limits, registrations and pending updates."""
        self.templates.clear()
        self.schedule.clear()
        self.totals = Counters()
        self.per_number.clear()
        self.webhook_counters = WebhookCounters()
        self._numbers.clear()
        self._mps.clear()
        self.sends.clear()
        self._throughput.clear()
        self._pairs.clear()
        self._sent.clear()
        self._transient_attempts.clear()
