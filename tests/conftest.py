"""Shared fixtures: databases on both backends and real gateway processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import (
    GatewayPool,
    GatewayProcess,
    Tenant,
    database_url_for,
    dispose_database,
    make_tenant,
)
from wagate.adapters.store.sql import SqlStore

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database on each backend."""
    url = database_url_for(request.param, tmp_path)
    yield url
    dispose_database(url)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    """A store on a fresh database."""
    store = SqlStore.from_url(database_url)
    yield store
    await store.close()


@pytest.fixture(scope="session")
def gateway_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayPool]:
    """The session's gateways, each kept running once started."""
    pool = GatewayPool(tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture(scope="session", params=BACKENDS)
def gateway(request: pytest.FixtureRequest, gateway_pool: GatewayPool) -> GatewayProcess:
    """One real gateway per backend for the session; tests isolate by tenant."""
    return gateway_pool.get(request.param)


@pytest.fixture(scope="session", params=BACKENDS)
def unchecked_gateway(request: pytest.FixtureRequest, gateway_pool: GatewayPool) -> GatewayProcess:
    """A gateway with WAGATE_TEMPLATE_CHECKS=0: what the body's own rules accept, whatever
    template it names (the checks against a template have tests of their own)."""
    return gateway_pool.get(request.param, WAGATE_TEMPLATE_CHECKS="0")


@pytest.fixture
def tenant(gateway: GatewayProcess) -> Tenant:
    """A project, key and sandbox phone number of its own on the session gateway."""
    return make_tenant(gateway.database_url)
