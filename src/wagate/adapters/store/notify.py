"""Customer webhooks on SQL: the endpoints (`WebhookEndpoints`) and the deliveries outbox
(`Notifications`) the notifiers claim, attempt, retry, dead-letter and replay.

Deliveries are written by the moving transactions themselves (`webhook_events.py`);
this module leases them out and records what became of them. A claim locks the
serving endpoints first (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the write lock),
so two claimers never count one endpoint's leases at once nor lease one delivery twice,
and a delivery is leased only when no earlier delivery of its (endpoint, order_key) is
still waiting or out: a receiver never sees `read` before the `delivered` of a message.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from wagate.adapters.store.engine import begin_write, dialect_of, run_batch
from wagate.adapters.store.queries import notify as q
from wagate.adapters.store.secrets import SecretBox
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

# SQLite allows 32,766 bound parameters; IN lists stay well below.
_CHUNK = 500
# How far ahead (due deliveries, oldest first) a claim looks for blocked ones to move:
# bounded, so a claim costs the same with a million waiting; what lies further comes into
# reach as the claims before take and move what is ahead of it.
BLOCKED_WINDOW = 256


class SqlNotifications:
    """`WebhookEndpoints` and `Notifications` on SQLite or PostgreSQL; secrets sealed at rest."""

    def __init__(self, engine: AsyncEngine, box: SecretBox | None = None) -> None:
        """Endpoints and deliveries on `engine`; `box` seals secrets (default: this
        database's key, see secrets.py)."""
        self.engine = engine
        self.box = box or SecretBox(engine.url)
        self.dialect = dialect_of(engine)

    # ---- endpoints ---------------------------------------------------------------------

    async def add_endpoint(self, endpoint: WebhookEndpoint) -> None:
        """Add an endpoint; raises ValueError if its phone number is unknown."""
        row = {"id": endpoint.id, **self._stored(endpoint), "created_at": endpoint.created_at}
        try:
            async with begin_write(self.engine) as connection:
                await connection.execute(q.INSERT_ENDPOINT, row)
        except IntegrityError as exc:
            raise ValueError(
                f"phone number {endpoint.phone_number_id} (or project {endpoint.project_id})"
                f" is unknown, or endpoint {endpoint.id} exists already"
            ) from exc

    async def get_endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        """An endpoint by its id."""
        async with self.engine.connect() as connection:
            row = (await connection.execute(q.ENDPOINT, {"b_endpoint_id": endpoint_id})).first()
        return None if row is None else self._endpoint(row)

    async def list_endpoints(self, phone_number_id: str) -> list[WebhookEndpoint]:
        """A phone number's endpoints, oldest first."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                q.ENDPOINTS_OF_NUMBER, {"b_phone_number_id": phone_number_id}
            )
            return [self._endpoint(row) for row in rows]

    async def update_endpoint(self, endpoint: WebhookEndpoint) -> bool:
        """Replace a stored endpoint by this one (same id); False if there is none.

        A resume (`paused_at` from set to None) makes its waiting deliveries due at
        `endpoint.updated_at` (the caller's now).
        """
        key = {"b_endpoint_id": endpoint.id}
        values = {f"b_{name}": value for name, value in self._stored(endpoint).items()}
        async with begin_write(self.engine) as connection:
            before = (await connection.execute(q.ENDPOINT, key)).first()
            if before is None:
                return False
            await connection.execute(q.UPDATE_ENDPOINT, {**key, **values})
            if before.paused_at is not None and endpoint.paused_at is None:
                await connection.execute(q.RESUME_DELIVERIES, {**key, "b_now": endpoint.updated_at})
        return True

    async def remove_endpoint(self, endpoint_id: str) -> bool:
        """Delete an endpoint with its deliveries and attempts; False if there is none."""
        key = {"b_endpoint_id": endpoint_id}
        async with begin_write(self.engine) as connection:
            await connection.execute(q.DELETE_ENDPOINT_ATTEMPTS, key)
            await connection.execute(q.DELETE_ENDPOINT_DELIVERIES, key)
            removed = await connection.execute(q.DELETE_ENDPOINT, key)
        return bool(removed.rowcount)

    def _stored(self, endpoint: WebhookEndpoint) -> dict[str, Any]:
        """The columns of an endpoint but its id and creation, secrets and headers sealed."""
        previous = endpoint.previous_secret
        return {
            "project_id": endpoint.project_id,
            "phone_number_id": endpoint.phone_number_id,
            "url": endpoint.url,
            "kind": endpoint.kind,
            "events": json.dumps(list(endpoint.events)),
            "active": endpoint.active,
            "secret": self.box.seal(endpoint.secret),
            "previous_secret": None if previous is None else self.box.seal(previous),
            "previous_secret_until": endpoint.previous_secret_until,
            "headers": self.box.seal(json.dumps(dict(endpoint.headers))),
            "failing_since": endpoint.failing_since,
            "paused_at": endpoint.paused_at,
            "updated_at": endpoint.updated_at,
        }

    def _endpoint(self, row: Any) -> WebhookEndpoint:
        """An endpoint from its row, secrets and headers opened."""
        previous = row.previous_secret
        headers = self.box.open(row.headers)
        return WebhookEndpoint(
            id=row.id,
            project_id=row.project_id,
            phone_number_id=row.phone_number_id,
            url=row.url,
            kind=row.kind,
            events=tuple(json.loads(row.events)),
            active=bool(row.active),
            secret=self.box.open(row.secret),
            headers=json.loads(headers) if headers else {},
            created_at=row.created_at,
            updated_at=row.updated_at,
            previous_secret=None if previous is None else self.box.open(previous),
            previous_secret_until=row.previous_secret_until,
            failing_since=row.failing_since,
            paused_at=row.paused_at,
        )

    # ---- claims and attempts -----------------------------------------------------------

    async def claim_deliveries(
        self, owner: str, now_ms: int, *, limit: int, per_endpoint: int, lease_ms: int
    ) -> list[ClaimedDelivery]:
        """Lease up to `limit` due deliveries to `owner`, oldest first.

        Due: pending with `next_attempt_at <= now_ms`, of an active endpoint that is not
        paused, the oldest still out of its (endpoint, order_key). At most
        `per_endpoint` leased per endpoint at once (live leases counted).
        """
        return await self.settle(
            (), owner, now_ms, limit=limit, per_endpoint=per_endpoint, lease_ms=lease_ms
        )

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Store each attempt and its delivery's new state where `owner` still holds the
        lease, and the endpoints' health (a success clears `failing_since`, and after an
        outage of OUTAGE_S makes the endpoint's waiting deliveries due; a failure sets it
        if unset), in one transaction."""
        if records:
            async with begin_write(self.engine) as connection:
                await run_batch(connection, lambda sync: self._record(sync, records))

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
        """`record_attempts(records)`, then `claim_deliveries(...)`, in one transaction: a
        busy notifier's cycle costs one transaction instead of two and a read."""
        claiming = limit > 0 and per_endpoint > 0
        if not records:
            if not claiming:
                return []
            async with self.engine.connect() as connection:
                # A cheap read first: an idle outbox costs no write and no lock.
                if (await connection.execute(q.ANY_DUE, {"b_now": now_ms})).first() is None:
                    return []

        def work(connection: Connection) -> tuple[list[Any], dict[str, Any]]:
            if records:
                self._record(connection, records)
            if not claiming:
                return [], {}
            return self._claim(connection, owner, now_ms, limit, per_endpoint, lease_ms)

        async with begin_write(self.engine) as connection:
            chosen, endpoints = await run_batch(connection, work)
        if not chosen:
            return []
        opened = {
            endpoint_id: self._endpoint(endpoints[endpoint_id])
            for endpoint_id in {row.endpoint_id for row in chosen}
        }
        return [
            ClaimedDelivery(
                seq=row.seq,
                id=row.id,
                endpoint=opened[row.endpoint_id],
                type=row.event_type,
                order_key=row.order_key,
                occurred_at=row.occurred_at,
                data=row.data,
                attempts=row.attempts,
                created_at=row.created_at,
            )
            for row in chosen
        ]

    def _claim(
        self,
        connection: Connection,
        owner: str,
        now_ms: int,
        limit: int,
        per_endpoint: int,
        lease_ms: int,
    ) -> tuple[list[Any], dict[str, Any]]:
        """Lease due deliveries in the caller's write transaction: the rows chosen, and
        the serving endpoints' rows by id."""
        now = {"b_now": now_ms}
        endpoints = {
            row.id: row for row in connection.execute(q.serving_endpoints(self.dialect), now)
        }
        if not endpoints:
            return [], endpoints
        leased = Counter(connection.execute(q.LIVE_LEASES, now).scalars())
        due = q.due_deliveries(self.dialect)
        defer = q.defer_blocked(self.dialect)
        candidates: list[Any] = []
        for endpoint_id in endpoints:
            room = min(per_endpoint - leased.get(endpoint_id, 0), limit)
            if room > 0:
                endpoint = {**now, "b_endpoint_id": endpoint_id}
                deferred = {**endpoint, "b_window": max(BLOCKED_WINDOW, 4 * room)}
                connection.execute(defer, deferred)
                parameters = {**endpoint, "b_limit": room}
                candidates.extend(connection.execute(due, parameters))
        # Oldest first across endpoints (each endpoint's list is already in order).
        chosen = sorted(candidates, key=lambda row: row.seq)[:limit]
        lease = {"b_owner": owner, "b_lease": now_ms + lease_ms}
        for start in range(0, len(chosen), _CHUNK):
            seqs = [row.seq for row in chosen[start : start + _CHUNK]]
            connection.execute(q.LEASE_DELIVERIES, {**lease, "b_seqs": seqs})
        return chosen, endpoints

    def _record(self, connection: Connection, records: Sequence[AttemptRecord]) -> None:
        """Write attempts and their deliveries' states in the caller's write transaction."""
        seqs = sorted({record.delivery_seq for record in records})
        holders: dict[int, Any] = {}
        for start in range(0, len(seqs), _CHUNK):
            chunk = {"b_seqs": seqs[start : start + _CHUNK]}
            for row in connection.execute(q.lease_holders(self.dialect), chunk):
                holders[row.seq] = row
        held = [
            record
            for record in records
            if (holder := holders.get(record.delivery_seq)) is not None
            and holder.lease_owner == record.owner
        ]
        if not held:
            return
        connection.execute(
            q.INSERT_ATTEMPT,
            [
                {
                    "delivery_id": holders[record.delivery_seq].id,
                    "endpoint_id": record.endpoint_id,
                    "at": record.at,
                    "latency_ms": record.latency_ms,
                    "status_code": record.status_code,
                    "error": record.error,
                }
                for record in held
            ],
        )
        connection.execute(
            q.RECORD_DELIVERY,
            [
                {
                    "b_seq": record.delivery_seq,
                    "b_owner": record.owner,
                    "b_state": record.state,
                    "b_next": record.next_attempt_at if record.state == "pending" else None,
                    "b_delivered_at": record.at if record.state == "delivered" else None,
                    "b_status_code": record.status_code,
                    "b_error": record.error,
                }
                for record in held
            ],
        )
        # A success of an endpoint that was healthy when claimed (and whose failures
        # this notifier has not recorded since) has nothing to clear: no statement.
        failing = {record.endpoint_id for record in held if record.endpoint_failing}
        # In the order of their ids: two batches never wait on each other's endpoints.
        for endpoint_id, (succeeded, at) in sorted(_health(held).items()):
            key = {"b_endpoint_id": endpoint_id}
            if succeeded and endpoint_id not in failing:
                continue
            if succeeded:
                outage = {**key, "b_outage_since": at - int(OUTAGE_S * 1000)}
                if connection.execute(q.ENDPOINT_RECOVERED, outage).first():
                    # Back from an outage: what waited for its retry goes now, not in
                    # up to 10 h (the receiver is back; its backlog should drain).
                    connection.execute(q.RESUME_DELIVERIES, {**key, "b_now": at})
                else:
                    connection.execute(q.ENDPOINT_SUCCEEDED, key)
            else:
                connection.execute(q.ENDPOINT_FAILED, {**key, "b_at": at})

    async def pause_endpoint(
        self, endpoint_id: str, at_ms: int, failing_before_ms: int | None = None
    ) -> bool:
        """Pause an endpoint (with `failing_before_ms`: only one failing since then or
        earlier; its deliveries wait); False if there is none, it is paused, or it has
        not failed that long."""
        parameters = {"b_endpoint_id": endpoint_id, "b_at": at_ms}
        statement = q.PAUSE_ENDPOINT
        if failing_before_ms is not None:
            parameters["b_failing_before"] = failing_before_ms
            statement = q.PAUSE_FAILING_ENDPOINT
        async with begin_write(self.engine) as connection:
            result = await connection.execute(statement, parameters)
        return bool(result.rowcount)

    async def add_test_delivery(
        self, endpoint_id: str, delivery_id: str, data: str, now_ms: int
    ) -> bool:
        """Queue a `whatsapp.webhook.test` delivery for one endpoint; False if none."""
        async with begin_write(self.engine) as connection:
            found = await connection.execute(q.ENDPOINT, {"b_endpoint_id": endpoint_id})
            if found.first() is None:
                return False
            await connection.execute(
                q.INSERT_DELIVERY,
                {
                    "id": delivery_id,
                    "endpoint_id": endpoint_id,
                    # A key of its own: a test waits behind nothing and holds nothing up.
                    "order_key": f"test:{delivery_id}",
                    "event_type": TEST_EVENT,
                    "data": data,
                    "occurred_at": now_ms,
                    "created_at": now_ms,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now_ms,
                },
            )
        return True

    # ---- the API's views, replay, housekeeping -----------------------------------------

    async def list_deliveries(
        self,
        endpoint_id: str,
        *,
        state: DeliveryState | None = None,
        limit: int = 20,
        before_seq: int | None = None,
    ) -> list[DeliveryView]:
        """An endpoint's deliveries, newest first (`before_seq`: the next page)."""
        parameters: dict[str, Any] = {
            "b_endpoint_id": endpoint_id,
            "b_before": q.FIRST_PAGE if before_seq is None else before_seq,
            "b_limit": limit,
        }
        statement = q.LIST_DELIVERIES
        if state is not None:
            statement, parameters["b_state"] = q.LIST_DELIVERIES_IN_STATE, state
        async with self.engine.connect() as connection:
            rows = await connection.execute(statement, parameters)
            return [
                DeliveryView(
                    seq=row.seq,
                    id=row.id,
                    endpoint_id=row.endpoint_id,
                    type=row.event_type,
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
                for row in rows
            ]

    async def list_attempts(
        self, endpoint_id: str, *, limit: int = 20, before_seq: int | None = None
    ) -> list[AttemptView]:
        """An endpoint's attempts, newest first."""
        parameters = {
            "b_endpoint_id": endpoint_id,
            "b_before": q.FIRST_PAGE if before_seq is None else before_seq,
            "b_limit": limit,
        }
        async with self.engine.connect() as connection:
            rows = await connection.execute(q.LIST_ATTEMPTS, parameters)
            return [AttemptView(**row._mapping) for row in rows]

    async def replay(self, endpoint_id: str, delivery_id: str | None, now_ms: int) -> int:
        """Make dead deliveries of an endpoint (one, or all when None) pending and due now,
        their attempts counted from zero again; returns how many."""
        parameters: dict[str, Any] = {"b_endpoint_id": endpoint_id, "b_now": now_ms}
        statement = q.REPLAY_DEAD
        if delivery_id is not None:
            statement, parameters["b_delivery_id"] = q.REPLAY_ONE, delivery_id
        async with begin_write(self.engine) as connection:
            result = await connection.execute(statement, parameters)
        return int(result.rowcount or 0)

    async def reap_deliveries(self, now_ms: int) -> int:
        """Make deliveries whose lease ended pending again; returns how many."""
        async with begin_write(self.engine) as connection:
            result = await connection.execute(q.REAP_DELIVERIES, {"b_now": now_ms})
        return int(result.rowcount or 0)

    async def prune_deliveries(self, before_ms: int, limit: int) -> int:
        """Delete up to `limit` attempts and delivered deliveries older than `before_ms`."""
        parameters = {"b_before": before_ms, "b_limit": max(0, limit)}
        async with begin_write(self.engine) as connection:
            attempts = await connection.execute(q.PRUNE_ATTEMPTS, parameters)
            deliveries = await connection.execute(q.PRUNE_DELIVERIES, parameters)
        return int(attempts.rowcount or 0) + int(deliveries.rowcount or 0)


def _health(records: Sequence[AttemptRecord]) -> dict[str, tuple[bool, int]]:
    """Per endpoint: whether its latest attempt succeeded, and since when it has failed
    (the first failure after its last success in this batch)."""
    health: dict[str, tuple[bool, int]] = {}
    for record in sorted(records, key=lambda r: r.at):
        succeeded = record.state == "delivered"
        before = health.get(record.endpoint_id)
        if succeeded or before is None or before[0]:
            health[record.endpoint_id] = (succeeded, record.at)
    return health
