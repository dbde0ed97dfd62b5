"""Customer webhooks in memory: the endpoints and the outbox of their deliveries.

What `adapters/store/notify.py` does on SQL, on a `MemoryDatabase`. The deliveries
themselves are drafted where messages move (`MemoryDatabase.message_moved`) and where
recipients stop or resume (`MemoryDatabase.preference_changed`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from wagate.adapters.memory.tables import AttemptRow, DeliveryRow, MemoryDatabase
from wagate.domain.notifications import (
    OUTAGE_S,
    TEST_EVENT,
    AttemptRecord,
    AttemptView,
    ClaimedDelivery,
    DeliveryState,
    DeliveryView,
    WebhookEndpoint,
)

_FINAL: frozenset[DeliveryState] = frozenset({"delivered", "dead"})


class MemoryNotifications:
    """`WebhookEndpoints` and `Notifications` on a `MemoryDatabase`."""

    def __init__(self, database: MemoryDatabase) -> None:
        self.database = database

    # ---- endpoints -------------------------------------------------------------------

    async def add_endpoint(self, endpoint: WebhookEndpoint) -> None:
        """Add an endpoint; raises ValueError if its phone number is unknown."""
        if endpoint.phone_number_id not in self.database.numbers:
            raise ValueError(f"no phone number {endpoint.phone_number_id}")
        if endpoint.id in self.database.endpoints:
            raise ValueError(f"endpoint {endpoint.id} exists")
        self.database.endpoints[endpoint.id] = endpoint

    async def get_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        """An endpoint by its id."""
        return self.database.endpoints.get(endpoint_id)

    async def list_endpoints(self, phone_number_id: str) -> list[WebhookEndpoint]:
        """A phone number's endpoints, oldest first."""
        mine = [e for e in self.database.endpoints.values() if e.phone_number_id == phone_number_id]
        return sorted(mine, key=lambda e: (e.created_at, e.id))

    async def update_endpoint(self, endpoint: WebhookEndpoint) -> bool:
        """Replace a stored endpoint; a resume makes its waiting deliveries due now."""
        stored = self.database.endpoints.get(endpoint.id)
        if stored is None:
            return False
        self.database.endpoints[endpoint.id] = endpoint
        if stored.paused_at is not None and endpoint.paused_at is None:
            for row in self._of(endpoint.id):
                if row.state == "pending":
                    row.next_attempt_at = endpoint.updated_at
        return True

    async def remove_endpoint(self, endpoint_id: str) -> bool:
        """Delete an endpoint with its deliveries and attempts."""
        if self.database.endpoints.pop(endpoint_id, None) is None:
            return False
        forget_endpoints(self.database, {endpoint_id})
        return True

    # ---- the outbox ------------------------------------------------------------------

    async def claim_deliveries(
        self, owner: str, now_ms: int, *, limit: int, per_endpoint: int, lease_ms: int
    ) -> list[ClaimedDelivery]:
        """Lease due deliveries, the oldest of each (endpoint, order_key), bounded per endpoint."""
        database = self.database
        leased: dict[str, int] = {}
        blocked: set[tuple[str, str]] = set()
        due: list[DeliveryRow] = []
        for row in sorted(database.deliveries.values(), key=lambda r: r.seq):
            key = (row.endpoint_id, row.order_key)
            if row.state == "delivering":
                leased[row.endpoint_id] = leased.get(row.endpoint_id, 0) + 1
                blocked.add(key)
            elif row.state == "pending":
                if key not in blocked:
                    due.append(row)
                blocked.add(key)
        claimed: list[ClaimedDelivery] = []
        for row in due:
            if len(claimed) >= limit:
                break
            endpoint = database.endpoints.get(row.endpoint_id)
            if endpoint is None or not endpoint.active or endpoint.paused_at is not None:
                continue
            if row.next_attempt_at is None or row.next_attempt_at > now_ms:
                continue
            if leased.get(row.endpoint_id, 0) >= per_endpoint:
                continue
            leased[row.endpoint_id] = leased.get(row.endpoint_id, 0) + 1
            row.state = "delivering"
            row.lease_owner = owner
            row.lease_expires_at = now_ms + lease_ms
            claimed.append(
                ClaimedDelivery(
                    seq=row.seq,
                    id=row.id,
                    endpoint=endpoint,
                    type=row.type,
                    order_key=row.order_key,
                    occurred_at=row.occurred_at,
                    data=row.data,
                    attempts=row.attempts,
                    created_at=row.created_at,
                )
            )
        return claimed

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Store each attempt and its delivery's new state, where the owner holds the lease."""
        database = self.database
        for record in records:
            row = database.deliveries.get(record.delivery_seq)
            if row is None or row.state != "delivering" or row.lease_owner != record.owner:
                continue
            row.attempts += 1
            row.state = record.state
            row.lease_owner = None
            row.lease_expires_at = None
            row.last_status_code = record.status_code
            row.last_error = record.error
            row.next_attempt_at = record.next_attempt_at if record.state == "pending" else None
            if record.state == "delivered":
                row.delivered_at = record.at
            database.attempts.append(
                AttemptRow(
                    database.next_seq(),
                    row.id,
                    row.endpoint_id,
                    record.at,
                    record.latency_ms,
                    record.status_code,
                    record.error,
                )
            )
            endpoint = database.endpoints.get(row.endpoint_id)
            if endpoint is None or (record.state == "delivered" and not record.endpoint_failing):
                continue  # healthy when claimed, no failure recorded since: nothing to clear
            if record.state == "delivered":
                failing_since = None
            else:
                failing_since = endpoint.failing_since or record.at
            if failing_since != endpoint.failing_since:
                database.endpoints[endpoint.id] = dataclasses.replace(
                    endpoint, failing_since=failing_since
                )
                outage_ms = int(OUTAGE_S * 1000)
                if failing_since is None and record.at - (endpoint.failing_since or 0) >= outage_ms:
                    # Back from an outage: what waited for its retry goes now.
                    for waiting in self._of(endpoint.id):
                        if (
                            waiting.state == "pending"
                            and (waiting.next_attempt_at or 0) > record.at
                        ):
                            waiting.next_attempt_at = record.at

    async def settle(
        self,
        records: Sequence[AttemptRecord],
        owner: str,
        now_ms: int,
        *,
        limit: int,
        per_endpoint: int,
        lease_ms: int,
    ) -> list[ClaimedDelivery]:
        """Record, then claim (nothing awaits in between: one step for other tasks)."""
        if records:
            await self.record_attempts(records)
        if limit <= 0 or per_endpoint <= 0:
            return []
        return await self.claim_deliveries(
            owner, now_ms, limit=limit, per_endpoint=per_endpoint, lease_ms=lease_ms
        )

    async def pause_endpoint(
        self, endpoint_id: str, at_ms: int, failing_before_ms: int | None = None
    ) -> bool:
        """Pause an endpoint (with `failing_before_ms`: only one failing since then or
        earlier); False if there is none, it is paused already, or it has not failed
        that long."""
        endpoint = self.database.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.paused_at is not None:
            return False
        if failing_before_ms is not None and (
            endpoint.failing_since is None or endpoint.failing_since > failing_before_ms
        ):
            return False
        self.database.endpoints[endpoint_id] = dataclasses.replace(endpoint, paused_at=at_ms)
        return True

    async def add_test_delivery(
        self, endpoint_id: str, delivery_id: str, data: str, now_ms: int
    ) -> bool:
        """Queue a test event for one endpoint."""
        if endpoint_id not in self.database.endpoints:
            return False
        seq = self.database.next_seq()
        self.database.deliveries[seq] = DeliveryRow(
            seq=seq,
            id=delivery_id,
            endpoint_id=endpoint_id,
            type=TEST_EVENT,
            order_key=f"test:{delivery_id}",
            occurred_at=now_ms,
            data=data,
            created_at=now_ms,
            next_attempt_at=now_ms,
        )
        return True

    async def list_deliveries(
        self,
        endpoint_id: str,
        *,
        state: DeliveryState | None = None,
        limit: int = 20,
        before_seq: int | None = None,
    ) -> list[DeliveryView]:
        """An endpoint's deliveries, newest first."""
        rows = [
            row
            for row in self._of(endpoint_id)
            if (state is None or row.state == state)
            and (before_seq is None or row.seq < before_seq)
        ]
        rows.sort(key=lambda r: r.seq, reverse=True)
        return [
            DeliveryView(
                seq=row.seq,
                id=row.id,
                endpoint_id=row.endpoint_id,
                type=row.type,
                order_key=row.order_key,
                state=row.state,
                attempts=row.attempts,
                created_at=row.created_at,
                next_attempt_at=row.next_attempt_at,
                delivered_at=row.delivered_at,
                last_status_code=row.last_status_code,
                last_error=row.last_error,
                data=row.data,
            )
            for row in rows[: max(0, limit)]
        ]

    async def list_attempts(
        self, endpoint_id: str, *, limit: int = 20, before_seq: int | None = None
    ) -> list[AttemptView]:
        """An endpoint's attempts, newest first."""
        rows = [
            a
            for a in reversed(self.database.attempts)
            if a.endpoint_id == endpoint_id and (before_seq is None or a.seq < before_seq)
        ]
        return [
            AttemptView(
                a.seq, a.delivery_id, a.endpoint_id, a.at, a.latency_ms, a.status_code, a.error
            )
            for a in rows[: max(0, limit)]
        ]

    async def replay(self, endpoint_id: str, delivery_id: str | None, now_ms: int) -> int:
        """Make dead deliveries (one, or all) pending and due now, attempts from zero."""
        replayed = 0
        for row in self._of(endpoint_id):
            if row.state == "dead" and delivery_id in (None, row.id):
                row.state = "pending"
                row.attempts = 0
                row.next_attempt_at = now_ms
                replayed += 1
        return replayed

    async def reap_deliveries(self, now_ms: int) -> int:
        """Make deliveries whose lease ended pending again."""
        reaped = 0
        for row in self.database.deliveries.values():
            if row.state == "delivering" and (row.lease_expires_at or 0) < now_ms:
                row.state = "pending"
                row.lease_owner = None
                row.lease_expires_at = None
                row.next_attempt_at = now_ms
                reaped += 1
        return reaped

    async def prune_deliveries(self, before_ms: int, limit: int) -> int:
        """Delete up to `limit` old attempts and old delivered deliveries."""
        database = self.database
        old = [a for a in database.attempts if a.at < before_ms][: max(0, limit)]
        gone = {a.seq for a in old}
        database.attempts[:] = [a for a in database.attempts if a.seq not in gone]
        delivered = [
            row.seq
            for row in database.deliveries.values()
            if row.state == "delivered" and (row.delivered_at or 0) < before_ms
        ][: max(0, limit - len(old))]
        for seq in delivered:
            del database.deliveries[seq]
        return len(old) + len(delivered)

    def _of(self, endpoint_id: str) -> list[DeliveryRow]:
        return [row for row in self.database.deliveries.values() if row.endpoint_id == endpoint_id]


def forget_endpoints(database: MemoryDatabase, endpoint_ids: set[str]) -> None:
    """Delete these endpoints' deliveries and attempts (the endpoints are gone)."""
    for seq in [s for s, row in database.deliveries.items() if row.endpoint_id in endpoint_ids]:
        del database.deliveries[seq]
    database.attempts[:] = [a for a in database.attempts if a.endpoint_id not in endpoint_ids]


__all__ = ["MemoryNotifications", "forget_endpoints"]
