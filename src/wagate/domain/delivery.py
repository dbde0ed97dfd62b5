"""What moves through delivery: claimed messages, Meta's answers, and send outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from wagate.domain.errors import DELIVERY_ABANDONED, MESSAGE_EXPIRED
from wagate.domain.model import PhoneNumber

# Marketing messages live 30 days unless told otherwise (API-FACTS section 4): a
# message Meta has not accepted by then fails with MESSAGE_EXPIRED.
DEFAULT_TTL_S: Final = 30 * 24 * 3600
# What a message that outlived its TTL in the queue fails with (beside MESSAGE_EXPIRED).
EXPIRED_DETAILS: Final = "The message's time to live passed before Meta accepted it"
# The reap that ends a worker's lease on a message for the MAX_REAPS-th time fails it
# (DELIVERY_ABANDONED) instead: each time it may already have reached Meta.
MAX_REAPS: Final = 3
ABANDONED_DETAILS: Final = (
    f"A worker's lease on the message ran out {MAX_REAPS} times before the "
    "outcome of its send was recorded. The message may or may not have "
    "reached Meta; it is not sent again."
)


# The errors the gateway decides itself; every other error of a send is the upstream's.
GATEWAY_ERRORS: Final = frozenset({MESSAGE_EXPIRED, DELIVERY_ABANDONED})


def is_upstream_error(code: int | None) -> bool:
    """Whether an outcome's error came from the upstream (Meta, or the network to it).

    Only those are the message's `last_error`: an expiry after retries keeps showing
    what the upstream said.
    """
    return code is not None and code not in GATEWAY_ERRORS


@dataclass(frozen=True, slots=True)
class Waiting:
    """A number with queued messages, and when the earliest of them is due (Unix seconds)."""

    number: PhoneNumber
    due: float


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message a worker now owns until its lease ends, and when it may be sent."""

    seq: int
    id: str
    phone_number_id: str
    recipient: str
    request: str
    attempts: int
    created_at: int
    expires_at: int
    slot: float
    # Seconds between two sends of this number at its current rate.
    interval: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one send; `kind` is forwarded, failed or retry."""

    seq: int
    owner: str
    kind: str
    at_ms: int
    wamid: str | None = None
    upstream_status: str | None = None
    error_code: int | None = None
    error_title: str | None = None
    error_details: str | None = None
    due_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class UpstreamResult:
    """Meta's answer to one send: a wamid, or an error code with its detail."""

    wamid: str | None = None
    message_status: str | None = None
    error_code: int | None = None
    error_title: str | None = None
    error_details: str | None = None
    http_status: int | None = None

    @property
    def ok(self) -> bool:
        """Whether Meta accepted the message."""
        return self.wamid is not None
