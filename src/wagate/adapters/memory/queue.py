"""The delivery queue in memory: claims paced by the domain's GCRA, guarded outcomes."""

from __future__ import annotations

from wagate.adapters.memory.statuses import apply_stored_statuses, reconcile
from wagate.adapters.memory.tables import MemoryDatabase, MessageRow
from wagate.domain import pacing
from wagate.domain.delivery import (
    ABANDONED_DETAILS,
    EXPIRED_DETAILS,
    MAX_REAPS,
    Claimed,
    Outcome,
    Waiting,
    is_upstream_error,
)
from wagate.domain.errors import DELIVERY_ABANDONED, MESSAGE_EXPIRED, kind_of
from wagate.domain.sanitise import without_nul
from wagate.domain.statuses import FINAL, UNMATCHED_GIVE_UP_MS


class MemoryQueue:
    """What `SqlQueue` does, on a `MemoryDatabase`."""

    def __init__(
        self,
        database: MemoryDatabase,
        pair_rate: pacing.Rate = pacing.pair_rate(pacing.PAIR_INTERVAL_S, pacing.PAIR_BURST),
    ) -> None:
        """A queue on `database`; each (number, recipient) pair is paced at `pair_rate`."""
        self.database = database
        self.pair_rate = pair_rate

    async def close(self) -> None:
        """Nothing pending: every outcome is applied at once."""

    async def waiting(self) -> list[Waiting]:
        """The numbers with queued messages, each with when its earliest one is due."""
        earliest: dict[str, int] = {}
        for row in self.database.messages.values():
            if row.state == "queued":
                number = row.message.phone_number_id
                earliest[number] = min(row.due_at, earliest.get(number, row.due_at))
        return [
            Waiting(self.database.numbers[number].number, due_at / 1000)
            for number, due_at in sorted(earliest.items())
        ]

    async def claim(
        self,
        phone_number_id: str,
        owner: str,
        now: float,
        *,
        lease_s: float,
        horizon_s: float,
        limit: int,
        tier_mps: int | None = None,
    ) -> list[Claimed]:
        """Claim due messages of one number and book their send slots (times in seconds)."""
        number = self.database.numbers.get(phone_number_id)
        if number is None:
            return []
        now_us = pacing.to_micros(now)
        rate = pacing.effective_rate(number.number.mps, tier_mps, number.pacing, now_us)
        horizon = pacing.to_micros(horizon_s)
        room, _ = pacing.plan(number.pacing, now_us, rate, horizon, limit)
        lease = pacing.to_micros(lease_s)
        claimed: list[Claimed] = []
        for round_ in range(pacing.CLAIM_ROUNDS):
            size = pacing.batch_size(round_, len(room) - len(claimed), limit)
            batch = self._due(phone_number_id, int(now * 1000), size)
            if not batch:
                break
            keys = [(phone_number_id, row.message.recipient) for row in batch]
            pairs = self.database.pairs
            result = pacing.assign(
                room[len(claimed) :],
                [row.message.recipient for row in batch],
                {key[1]: pairs[key] for key in keys if key in pairs},
                now_us,
                self.pair_rate,
            )
            for recipient, pair in result.pairs.items():
                pairs[phone_number_id, recipient] = pair
            for index, turn in result.deferred:
                batch[index].due_at = pacing.due_ms(turn)
            for index, slot in result.sends:
                claimed.append(self._lease(batch[index], owner, slot, lease, rate))
            if not result.deferred or len(claimed) == len(room):
                break
        if claimed:
            _, number.pacing = pacing.plan(number.pacing, now_us, rate, horizon, len(claimed))
        return claimed

    def _due(self, phone_number_id: str, now_ms: int, limit: int) -> list[MessageRow]:
        """Up to `limit` due messages of a number, oldest due first."""
        due = (
            row
            for row in self.database.messages.values()
            if row.message.phone_number_id == phone_number_id
            and row.state == "queued"
            and row.due_at <= now_ms
        )
        return sorted(due, key=lambda row: (row.due_at, row.seq))[: max(0, limit)]

    @staticmethod
    def _lease(
        row: MessageRow, owner: str, slot: pacing.Micros, lease: pacing.Micros, rate: pacing.Rate
    ) -> Claimed:
        row.state = "sending"
        row.lease_owner = owner
        row.lease_expires_at = (slot + lease) // 1000
        row.attempts += 1
        return Claimed(
            seq=row.seq,
            id=row.message.id,
            phone_number_id=row.message.phone_number_id,
            recipient=row.message.recipient,
            request=row.message.request,
            attempts=row.attempts,
            created_at=row.message.created_at,
            expires_at=row.message.expires_at,
            slot=pacing.to_seconds(slot),
            interval=pacing.to_seconds(rate.interval),
        )

    async def record(self, outcome: Outcome) -> None:
        """Apply a send's outcome, only if `outcome.owner` still holds the lease."""
        row = self.database.messages.get(outcome.seq)
        if row is not None and row.lease_owner == outcome.owner:
            self._apply(row, outcome)
        if outcome.kind == "forwarded" and outcome.wamid:
            # Meta may report a status before the outcome records its wamid.
            apply_stored_statuses(self.database, [outcome.wamid], outcome.at_ms)

    def _apply(self, row: MessageRow, outcome: Outcome) -> None:
        row.lease_owner = None
        row.lease_expires_at = None
        row.updated_at = outcome.at_ms
        if outcome.kind == "forwarded":
            row.state = "forwarded"
            row.upstream_wamid = outcome.wamid
            row.upstream_status = without_nul(outcome.upstream_status)
            row.last_error_code = row.last_error_title = row.last_error_details = None
            row.last_error_at = None
            return
        row.error_code = outcome.error_code
        row.error_title = without_nul(outcome.error_title)
        row.error_details = without_nul(outcome.error_details)
        if is_upstream_error(outcome.error_code):
            row.last_error_code = row.error_code
            row.last_error_title = row.error_title
            row.last_error_details = row.error_details
            row.last_error_at = outcome.at_ms
        if outcome.kind == "failed":
            row.state = "done"
            row.status = "failed"
            self.database.message_moved(row, outcome.at_ms)
        else:
            row.state = "queued"
            row.due_at = outcome.due_at_ms if outcome.due_at_ms is not None else row.due_at

    async def prune(self, final_before_ms: int, limit: int) -> int:
        """Delete up to `limit` messages final since before `final_before_ms`, out of the
        queue and not still needed, with their statuses and events."""
        due = sorted(
            (
                row
                for row in self.database.messages.values()
                if row.status in FINAL
                and row.updated_at < final_before_ms
                and row.state in ("forwarded", "done")
                and not self.still_needed(row)
            ),
            key=lambda row: (row.updated_at, row.seq),
        )[: max(0, limit)]
        wamids = {row.upstream_wamid for row in due if row.upstream_wamid}
        for row in due:
            del self.database.messages[row.seq]
        statuses = self.database.statuses
        for key in [key for key, record in statuses.items() if record.wamid in wamids]:
            del statuses[key]
        self.database.events = [e for e in self.database.events if e.wamid not in wamids]
        return len(due)

    @staticmethod
    def still_needed(row: MessageRow) -> bool:
        """The hook of `queries.retention.STILL_NEEDED`: nothing references a final message yet."""
        return False

    async def throttle(self, phone_number_id: str, now: float) -> None:
        """Meta said 130429: halve the number's shared rate; it recovers by itself."""
        number = self.database.numbers.get(phone_number_id)
        if number is not None:
            number.pacing = pacing.throttle(number.pacing, pacing.to_micros(now), number.number.mps)

    async def hold_recipient(self, phone_number_id: str, recipient: str, until_ms: int) -> None:
        """131056: the pair sends nothing before `until_ms`; its queued messages stay put."""
        key = (phone_number_id, recipient)
        pair = self.database.pairs.get(key, pacing.PairState())
        self.database.pairs[key] = pacing.hold_pair(pair, until_ms * 1000, self.pair_rate)

    async def reap_leases(self, now: float) -> int:
        """Requeue messages whose lease ended; fail those whose lease ended MAX_REAPS times."""
        now_ms = int(now * 1000)
        kind = kind_of(DELIVERY_ABANDONED)
        reaped = 0
        for row in self.database.messages.values():
            if row.state != "sending" or row.lease_expires_at is None:
                continue
            if row.lease_expires_at >= now_ms:
                continue
            reaped += 1
            row.lease_expires_at = None
            row.reaps += 1
            if row.reaps >= MAX_REAPS:
                row.state = "done"
                row.status = "failed"
                row.error_code = DELIVERY_ABANDONED
                row.error_title = kind.title
                row.error_details = ABANDONED_DETAILS
                row.updated_at = now_ms
                self.database.message_moved(row, now_ms)
            else:
                row.state = "queued"
                row.due_at = now_ms
        return reaped

    async def expire(self, now: float) -> int:
        """Fail the queued messages whose TTL passed before they could be handed to Meta;
        forget pairs whose pacing has run out (the same as none)."""
        now_ms = int(now * 1000)
        now_us = pacing.to_micros(now)
        for key in [key for key, pair in self.database.pairs.items() if pair.reserved < now_us]:
            del self.database.pairs[key]
        kind = kind_of(MESSAGE_EXPIRED)
        expired = 0
        for row in self.database.messages.values():
            if row.state == "queued" and row.message.expires_at < now_ms:
                expired += 1
                row.state = "done"
                row.status = "failed"
                row.error_code = MESSAGE_EXPIRED
                row.error_title = kind.title
                row.error_details = EXPIRED_DETAILS
                row.updated_at = now_ms
                self.database.message_moved(row, now_ms)
        return expired

    async def reconcile(self, now: float) -> int:
        """Apply statuses that arrived before their wamid was recorded."""
        return reconcile(self.database, int(now * 1000), UNMATCHED_GIVE_UP_MS)
