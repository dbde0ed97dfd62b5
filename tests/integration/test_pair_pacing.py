"""Pair pacing through real processes: a gateway and its embedded sandbox, on both backends.

The gateway paces each (number, recipient) pair as the sandbox enforces it (here one
message per second, bursts of 3, so the test runs in seconds instead of minutes): a
flood to one recipient reaches the sandbox without a single 131056 and one message per
interval after its burst, while another recipient's messages go at once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import select

from tests import loopback
from tests.integration.test_delivery import accept, unique_phone
from tests.support import (
    ADMIN,
    GatewayProcess,
    database_url_for,
    dispose_database,
    make_tenant,
    sandbox_stats,
)
from wagate.adapters.store.engine import create_engine
from wagate.adapters.store.tables import messages
from wagate.domain.errors import PAIR_RATE_LIMIT

INTERVAL_S = 1.0
BURST = 3
# The gateway keeps one message of the burst spare (domain.pacing.pair_rate).
PACED_BURST = BURST - 1
FLOOD = 8
OTHERS = 3
# How much closer together than the pace two sends may reach the sandbox: the later
# one's HTTP round trip against the earlier one's, on a busy machine (a fresh-clone CI run
# on a slow machine saw 0.12 s: the sandbox stamps a send when its share of the loop
# that also runs the API and the worker gets to it).
ARRIVAL_JITTER_S = 0.2


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway with a worker and the embedded sandbox, both on the same small pair rule."""
    tmp = tmp_path_factory.mktemp(f"pairs-{request.param}")
    url = database_url_for(request.param, tmp)
    process = GatewayProcess(
        url,
        tmp / "gateway.log",
        WAGATE_PAIR_INTERVAL_SECONDS=str(INTERVAL_S),
        WAGATE_PAIR_BURST=str(BURST),
        WAGATE_SANDBOX_PAIR_INTERVAL=str(INTERVAL_S),
        WAGATE_SANDBOX_PAIR_BURST=str(BURST),
    )
    try:
        yield process.start()
    finally:
        process.stop()
        dispose_database(url)


def forwarded_times(database_url: str, ids: Sequence[str], timeout: float) -> dict[str, float]:
    """When each message was first seen forwarded (monotonic seconds), polling its row."""

    async def watch() -> dict[str, float]:
        engine = create_engine(database_url)
        seen: dict[str, float] = {}
        query = select(messages.c.id).where(
            messages.c.id.in_(ids), messages.c.upstream_wamid.isnot(None)
        )
        deadline = time.monotonic() + timeout
        try:
            while len(seen) < len(ids) and time.monotonic() < deadline:
                async with engine.connect() as connection:
                    rows = (await connection.execute(query)).all()
                now = time.monotonic()
                for row in rows:
                    seen.setdefault(row.id, now)
                await asyncio.sleep(0.02)
        finally:
            await engine.dispose()
        return seen

    return asyncio.run(watch())


def digits(phone: str) -> str:
    """A phone number as the sandbox logs its recipient: the digits."""
    return "".join(c for c in phone if c.isdigit())


def sandbox_sends(sandbox_url: str, phone_number_id: str) -> list[dict[str, object]]:
    """The sandbox's log of one number's accepted sends, oldest first."""
    response = loopback.get(
        f"{sandbox_url}/_sends",
        params={"phone_number_id": phone_number_id},
        headers=ADMIN,
        timeout=10,
    )
    response.raise_for_status()
    data: list[dict[str, object]] = response.json()["data"]
    return data


def test_a_flood_to_one_recipient_keeps_the_pair_rate_and_never_meets_a_131056(
    gateway: GatewayProcess,
) -> None:
    tenant = make_tenant(gateway.database_url)
    flooded, other = unique_phone("0000"), unique_phone("0000")
    flood = [accept(gateway, tenant, to=flooded) for _ in range(FLOOD)]
    others = [accept(gateway, tenant, to=other) for _ in range(OTHERS)]
    others_accepted = time.time()

    nominal = (FLOOD - PACED_BURST) * INTERVAL_S
    seen = forwarded_times(gateway.database_url, flood + others, timeout=nominal + 15)

    assert set(seen) == set(flood + others), "not every message was forwarded"
    sandbox = f"{gateway.base_url}/sandbox"
    stats = sandbox_stats(sandbox)["numbers"][tenant.phone_number_id]
    assert str(PAIR_RATE_LIMIT) not in stats["errors"]
    assert stats["accepted"] == FLOOD + OTHERS
    # When the sandbox accepted each send (its own log, Unix seconds), per recipient.
    arrivals: dict[str, list[float]] = {}
    for sent in sandbox_sends(sandbox, tenant.phone_number_id):
        arrivals.setdefault(str(sent["to"]), []).append(float(str(sent["at"])))
    flood_at = sorted(arrivals[digits(flooded)])
    others_at = sorted(arrivals[digits(other)])
    assert (len(flood_at), len(others_at)) == (FLOOD, OTHERS)
    # The flood keeps the gateway's pair rate (GCRA: one per interval, PACED_BURST back to
    # back; it keeps one of Meta's burst spare), which the sandbox's own rule (Meta's,
    # refused above with 131056) allows: any two sends k apart are at least
    # k - (PACED_BURST - 1) intervals apart. A send that had to wait longer (its claim
    # came late) leaves room for a later pair of sends closer together, as GCRA allows.
    for i, j in itertools.combinations(range(len(flood_at)), 2):
        allowed = (j - i - (PACED_BURST - 1)) * INTERVAL_S - ARRIVAL_JITTER_S
        assert flood_at[j] - flood_at[i] >= allowed, (i, j, flood_at)
    assert flood_at[-1] - flood_at[0] >= (FLOOD - PACED_BURST) * INTERVAL_S - ARRIVAL_JITTER_S
    # The other recipient passes the flood: its messages go at once, long before the
    # flood's last one.
    assert others_at[-1] - others_accepted < 3.0
    assert others_at[-1] < flood_at[-1] - 2 * INTERVAL_S
