"""Reading messages back: one message with its timeline, or a page of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from wagate.domain.errors import INVALID_PARAMETER, GraphError
from wagate.domain.model import MessageQuery, StoredMessage
from wagate.domain.statuses import TimelineEntry
from wagate.ports import MessageReader, Timelines


@dataclass(frozen=True, slots=True)
class MessageRead:
    """A stored message and its timeline (the statuses Meta reported, oldest first)."""

    message: StoredMessage
    timeline: tuple[TimelineEntry, ...]


@dataclass(frozen=True, slots=True)
class Page:
    """A page of messages, newest first, and whether the listing goes on past it.

    `has_more` looks in the direction paged: older messages after an `after` cursor
    (or on the first page), newer ones after a `before` cursor.
    """

    items: list[MessageRead]
    has_more: bool


def message_not_found(message_id: str) -> GraphError:
    """The answer for a message id the caller cannot see (Meta's words, code 100/33)."""
    return GraphError(
        INVALID_PARAMETER,
        f"Object with ID '{message_id}' does not exist, cannot be loaded due to missing "
        "permissions, or does not support this operation.",
        subcode=33,
    )


class Reader:
    """The read use cases, on a message reader and the timelines of statuses."""

    def __init__(self, messages: MessageReader, timelines: Timelines) -> None:
        self._messages = messages
        self._timelines = timelines

    async def message(self, phone_number_id: str, message_id: str) -> MessageRead:
        """One message of a number with its timeline, or a code 100 (subcode 33) error."""
        # No stored id has a NUL; PostgreSQL text cannot even be asked for one.
        message = (
            None
            if "\x00" in message_id
            else await self._messages.get_message(phone_number_id, message_id)
        )
        if message is None:
            raise message_not_found(message_id)
        [read] = await self._with_timelines([message])
        return read

    async def page(self, query: MessageQuery) -> Page:
        """Up to `query.limit` messages, newest first, with their timelines.

        One row more than the page is fetched: its presence says there is more.
        """
        rows = await self._messages.list_messages(dataclasses.replace(query, limit=query.limit + 1))
        has_more = len(rows) > query.limit
        rows = rows[: query.limit]
        if query.before_seq is not None:
            rows.reverse()  # paged towards newer messages: fetched oldest first
        return Page(await self._with_timelines(rows), has_more)

    async def _with_timelines(self, messages: Sequence[StoredMessage]) -> list[MessageRead]:
        wamids = [m.upstream_wamid for m in messages if m.upstream_wamid]
        timelines = await self._timelines.timeline(wamids) if wamids else {}
        return [
            MessageRead(m, tuple(timelines.get(m.upstream_wamid, ()) if m.upstream_wamid else ()))
            for m in messages
        ]
