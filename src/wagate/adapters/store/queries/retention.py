"""Retention: final messages past their time, deleted with their statuses and events.

Final messages are found by age through ix_messages_final (partial: the domain's final
statuses, written as literals so that the planners match it, as in `queue.py`); their
statuses through uq_message_statuses_wamid_status, their events through
ix_message_events_upstream_wamid, the messages themselves by `seq`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    bindparam,
    delete,
    literal_column,
    select,
)

from wagate.adapters.store.engine import Dialect
from wagate.adapters.store.tables import message_events, message_statuses, messages
from wagate.domain.statuses import FINAL


def _literals(values: frozenset[str]) -> list[Any]:
    return [literal_column(f"'{value}'") for value in sorted(values)]


_FINAL = messages.c.status.in_(_literals(FINAL))
# Never a message the queue still holds (a late outcome may requeue a failed one).
_OUT_OF_THE_QUEUE = messages.c.state.in_(_literals(frozenset({"forwarded", "done"})))

# THE HOOK: what still needs a final message, so that retention keeps it. Today nothing
# references messages once they are final. Customer webhooks (issue 9) and broadcasts
# add here the condition that keeps a message they still need, e.g.
#     ~exists().where(webhook_deliveries.c.message_seq == messages.c.seq,
#                     webhook_deliveries.c.state != 'done')
# and the same rule in `adapters/memory/queue.py` (`MemoryQueue.still_needed`).
# Customer webhooks need nothing here: a delivery carries its event's data and never
# reads its message again (their own pruning is `SqlNotifications.prune_deliveries`).
STILL_NEEDED: tuple[ColumnElement[bool], ...] = ()


@cache
def prunable(dialect: Dialect) -> Select[Any]:
    """Up to `b_limit` messages final since before `b_before`, oldest first; on PostgreSQL
    skipping the rows another worker is pruning."""
    query = (
        select(messages.c.seq, messages.c.upstream_wamid)
        .where(
            _FINAL,
            messages.c.updated_at < bindparam("b_before"),
            _OUT_OF_THE_QUEUE,
            *(~condition for condition in STILL_NEEDED),
        )
        .order_by(messages.c.updated_at)
        .limit(bindparam("b_limit"))
    )
    return dialect.locking_claimable(query)


_WAMIDS: BindParameter[str] = bindparam("b_wamids", expanding=True)

DELETE_STATUSES = delete(message_statuses).where(message_statuses.c.upstream_wamid.in_(_WAMIDS))
DELETE_EVENTS = delete(message_events).where(message_events.c.upstream_wamid.in_(_WAMIDS))
DELETE_MESSAGES = delete(messages).where(messages.c.seq.in_(bindparam("b_seqs", expanding=True)))
