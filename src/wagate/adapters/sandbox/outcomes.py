"""What happens to an accepted message: the deterministic recipients and the updates it earns.

A recipient's fate is chosen by the last four characters of its phone number or
BSUID, so tests and demos can ask for a failure by choosing the recipient.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

from wagate.domain.errors import (
    HEALTHY_ECOSYSTEM,
    MARKETING_OPT_OUT,
    SOMETHING_WENT_WRONG,
    UNDELIVERABLE,
)
from wagate.domain.recipients import RecipientKind

UpdateKind = Literal["sent", "delivered", "read", "failed", "user_preferences", "click"]


@dataclass(frozen=True, slots=True)
class Step:
    """One update; `code` is the error code of a `failed` status."""

    kind: UpdateKind
    code: int | None = None


# The n-th tuple is due n status delays after the accept.
Outcome = tuple[tuple[Step, ...], ...]

DELIVERED_AND_READ: Final[Outcome] = ((Step("sent"),), (Step("delivered"),), (Step("read"),))
# Meta reports an undeliverable message with `failed` alone, without a `sent` first.
OUTCOMES: Final[dict[str, Outcome]] = {
    "9026": ((Step("failed", UNDELIVERABLE),),),
    "9049": ((Step("failed", HEALTHY_ECOSYSTEM),),),
    "9050": ((Step("failed", MARKETING_OPT_OUT), Step("user_preferences")),),
    "9001": (*DELIVERED_AND_READ, (Step("click"),)),
}
# Recipients whose first sends are refused synchronously: code and how many times.
TRANSIENT_FAILURES: Final[dict[str, tuple[int, int]]] = {"9500": (SOMETHING_WENT_WRONG, 2)}


def outcome_of(address: str) -> Outcome:
    """The updates a message to this phone number (digits) or BSUID earns."""
    return OUTCOMES.get(address[-4:], DELIVERED_AND_READ)


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """An accepted message, as much of it as its status updates repeat."""

    wamid: str
    phone_number_id: str
    waba_id: str
    display_phone_number: str
    address: str
    kind: RecipientKind
    biz_opaque_callback_data: str | None
    # Unix seconds of the accept; update timestamps count from it.
    accepted_at: float


@dataclass(frozen=True, slots=True)
class Update:
    """An update due to be reported by webhook."""

    due: float
    step: Step
    message: AcceptedMessage


class UpdateSchedule:
    """Updates waiting for their time, one FIFO per delay multiple.

    Every message's n-th step is due `n * delay` after its accept, and accepts come
    in time order, so each FIFO is already sorted by due time: no heap needed.
    """

    def __init__(self, delay: float, capacity: int = 200_000) -> None:
        """An empty schedule with `delay` seconds between a message's updates."""
        self.delay = delay
        self.capacity = capacity
        self._queues: list[deque[Update]] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def has_room(self, outcome: Outcome) -> bool:
        """Whether every step of `outcome` fits under the capacity."""
        return self._size + sum(len(steps) for steps in outcome) <= self.capacity

    def add(self, message: AcceptedMessage, outcome: Outcome) -> None:
        """Schedule every step of `outcome` for `message`."""
        while len(self._queues) < len(outcome):
            self._queues.append(deque())
        for n, steps in enumerate(outcome, start=1):
            due = message.accepted_at + n * self.delay
            queue = self._queues[n - 1]
            for step in steps:
                queue.append(Update(due, step, message))
                self._size += 1

    def take_due(self, now: float) -> list[Update]:
        """Remove and return the updates due at `now`, earlier steps of a message first."""
        due: list[Update] = []
        for queue in self._queues:
            while queue and queue[0].due <= now:
                due.append(queue.popleft())
        self._size -= len(due)
        return due

    def clear(self) -> None:
        """Drop every pending update."""
        self._queues.clear()
        self._size = 0
