"""Administering projects, API keys and phone numbers (the CLI's use cases)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from wagate.core.access import hash_key, new_key
from wagate.domain.model import ApiKey, PhoneNumber, Project, Upstream
from wagate.ports import Admin, Clock

DEFAULT_MPS = 80
SANDBOX_OFF = (
    "the sandbox is switched off (WAGATE_SANDBOX=0): add the number with --upstream meta,"
    " or unset WAGATE_SANDBOX"
)


class AdminError(Exception):
    """A request the operator must correct (unknown project, taken id ...)."""


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new API key: the key itself is shown once and never stored."""

    key: ApiKey
    secret: str


def _now_ms(clock: Clock) -> int:
    return int(clock.now() * 1000)


async def create_project(
    store: Admin, clock: Clock, name: str, *, rate_limit: int | None = None
) -> tuple[Project, IssuedKey]:
    """A new project with its first API key; `rate_limit`: requests per minute (None: none)."""
    if not name.strip():
        raise AdminError("a project needs a name")
    _check_rate_limit(rate_limit)
    project = Project(
        id="prj_" + secrets.token_hex(8),
        name=name.strip(),
        created_at=_now_ms(clock),
        rate_limit=rate_limit,
    )
    await store.create_project(project)
    return project, await create_key(store, clock, project.id, label="initial")


async def set_rate_limit(store: Admin, project_id: str, rate_limit: int | None) -> Project:
    """Set a project's requests per minute (None: no limit); felt within the auth cache time."""
    _check_rate_limit(rate_limit)
    if not await store.set_project_rate_limit(project_id, rate_limit):
        raise AdminError(f"no project {project_id!r} (see `wagate projects list`)")
    return await _require_project(store, project_id)


def _check_rate_limit(rate_limit: int | None) -> None:
    if rate_limit is not None and rate_limit < 1:
        raise AdminError("a rate limit is at least 1 request per minute (or none)")


async def _require_project(store: Admin, project_id: str) -> Project:
    for project in await store.list_projects():
        if project.id == project_id:
            return project
    raise AdminError(f"no project {project_id!r} (see `wagate projects list`)")


async def create_key(store: Admin, clock: Clock, project_id: str, label: str = "") -> IssuedKey:
    """A new API key for a project."""
    await _require_project(store, project_id)
    secret = new_key()
    key = ApiKey(
        id="key_" + secrets.token_hex(8),
        project_id=project_id,
        prefix=secret[:10],
        label=label,
        created_at=_now_ms(clock),
        revoked_at=None,
    )
    await store.create_api_key(key, hash_key(secret))
    return IssuedKey(key, secret)


async def list_keys(store: Admin, project_id: str) -> list[ApiKey]:
    """A project's keys, revoked ones included."""
    await _require_project(store, project_id)
    return await store.list_api_keys(project_id)


async def revoke_key(store: Admin, clock: Clock, key_id: str) -> None:
    """Revoke a key; it stops working within the auth cache time in every process."""
    if not await store.revoke_api_key(key_id, _now_ms(clock)):
        raise AdminError(f"no live key {key_id!r}")


def new_sandbox_token() -> str:
    """An access token for a sandbox number: the sandbox accepts no other for it."""
    return "sbx_" + secrets.token_urlsafe(32)


async def add_number(
    store: Admin,
    clock: Clock,
    *,
    project_id: str,
    phone_number_id: str,
    waba_id: str | None = None,
    upstream: Upstream = "sandbox",
    access_token: str = "",
    mps: int = DEFAULT_MPS,
    sandbox_allowed: bool = True,
) -> PhoneNumber:
    """Register a phone number with a project; a sandbox number without a token gets one."""
    if upstream == "sandbox" and not sandbox_allowed:
        raise AdminError(SANDBOX_OFF)
    await _require_project(store, project_id)
    if not phone_number_id.strip() or "/" in phone_number_id:
        raise AdminError("a phone number id is a non-empty id without '/'")
    if mps < 1:
        raise AdminError("--mps must be at least 1")
    if upstream == "meta" and not access_token:
        raise AdminError("a number with --upstream meta needs --access-token")
    number = PhoneNumber(
        phone_number_id=phone_number_id,
        waba_id=waba_id or str(10**14 + secrets.randbelow(9 * 10**14)),
        project_id=project_id,
        upstream=upstream,
        access_token=access_token or (new_sandbox_token() if upstream == "sandbox" else ""),
        mps=mps,
    )
    try:
        await store.add_phone_number(number, created_at=_now_ms(clock))
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    return number


@dataclass(frozen=True, slots=True)
class Demo:
    """What `wagate serve --demo` prints: a project, a sandbox number and a fresh key."""

    project: Project
    number: PhoneNumber
    key: IssuedKey


DEMO_PROJECT = "demo"
DEMO_NUMBER = "100000000000001"
DEMO_KEY_LABEL = "demo (make serve)"


async def ensure_demo(store: Admin, clock: Clock, *, sandbox_allowed: bool = True) -> Demo:
    """The demo project and sandbox number, created once; a new key on every call.

    The key is shown only once, so each `make serve` mints one and revokes the
    previous demo key: there is always exactly one live demo key, the printed one.
    """
    if not sandbox_allowed:
        raise AdminError(f"--demo needs a sandbox number, but {SANDBOX_OFF}")
    projects = [p for p in await store.list_projects() if p.name == DEMO_PROJECT]
    if projects:
        project = projects[0]
    else:
        project, _ = await create_project(store, clock, DEMO_PROJECT)
    number = await store.get_phone_number(DEMO_NUMBER)
    if number is None:
        number = await add_number(
            store, clock, project_id=project.id, phone_number_id=DEMO_NUMBER, mps=DEFAULT_MPS
        )
    for key in await store.list_api_keys(project.id):
        if key.revoked_at is None:
            await store.revoke_api_key(key.id, _now_ms(clock))
    return Demo(project, number, await create_key(store, clock, project.id, DEMO_KEY_LABEL))
