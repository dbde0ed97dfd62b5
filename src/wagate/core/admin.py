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


MARKETING_LIMIT_POLICIES = ("hold", "refuse")


async def set_policies(
    store: Admin,
    project_id: str,
    *,
    marketing_limit: str | None = None,
    frequency_cap: int | None = None,
    no_frequency_cap: bool = False,
) -> Project:
    """Change a project's 131049 policy and/or frequency cap (what is not given stays);
    felt within the auth cache time."""
    project = await _require_project(store, project_id)
    if marketing_limit is not None and marketing_limit not in MARKETING_LIMIT_POLICIES:
        raise AdminError(f"--on-131049 is one of {', '.join(MARKETING_LIMIT_POLICIES)}")
    if frequency_cap is not None and frequency_cap < 1:
        raise AdminError("a frequency cap is at least 1 message per recipient per 24 h (or none)")
    cap = None if no_frequency_cap else (frequency_cap or project.frequency_cap)
    policy = marketing_limit or project.marketing_limit
    await store.set_project_policies(project_id, policy, cap)
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


# Meta's ids (phone number, WhatsApp Business Account) are decimal digits.
MAX_ID_DIGITS = 64


def check_meta_id(value: str, what: str) -> str:
    """`value` if it is a Meta id (digits only), else an AdminError naming `what`."""
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_ID_DIGITS):
        raise AdminError(
            f"{what} must be digits only, like Meta's ids (e.g. 106540352242922), got {value!r}"
        )
    return value


def _check_mps(mps: int) -> None:
    if mps < 1:
        raise AdminError("--mps must be at least 1")


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
    """Register a phone number with a project; a sandbox number without a token gets one.

    A `meta` number needs its real WABA id (Meta's templates and webhooks name it);
    a sandbox number without one gets a made-up WABA.
    """
    if upstream == "sandbox" and not sandbox_allowed:
        raise AdminError(SANDBOX_OFF)
    await _require_project(store, project_id)
    check_meta_id(phone_number_id, "--phone-number-id")
    if waba_id:
        check_meta_id(waba_id, "--waba-id")
    _check_mps(mps)
    if upstream == "meta" and not access_token:
        raise AdminError("a number with --upstream meta needs --access-token")
    if upstream == "meta" and not waba_id:
        raise AdminError(
            "a number with --upstream meta needs --waba-id: its WhatsApp Business Account id"
            " (WhatsApp Manager, or the `whatsapp_business_account` of Meta's webhooks)"
        )
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


class NumberNotFound(AdminError):
    """No such phone number (or, for a project-scoped caller, not one of its numbers)."""


class NumberBusy(AdminError):
    """A number with undelivered messages, which `remove` without force leaves alone."""

    def __init__(self, phone_number_id: str, undelivered: int) -> None:
        super().__init__(
            f"phone number {phone_number_id} has {undelivered} undelivered message(s) (queued or"
            " being sent): wait for them, or remove it anyway with --force (they are deleted"
            " unsent)"
        )
        self.undelivered = undelivered


async def list_numbers(store: Admin, project_id: str | None = None) -> list[PhoneNumber]:
    """A project's phone numbers (every number when None), ordered by id."""
    if project_id is not None:
        await _require_project(store, project_id)
    return await store.list_phone_numbers(project_id)


async def show_number(
    store: Admin, phone_number_id: str, project_id: str | None = None
) -> PhoneNumber:
    """A phone number; with `project_id`, only if it is that project's."""
    number = await store.get_phone_number(phone_number_id)
    if number is None or (project_id is not None and number.project_id != project_id):
        raise NumberNotFound(f"no phone number {phone_number_id!r} (see `wagate numbers list`)")
    return number


async def update_number(
    store: Admin,
    phone_number_id: str,
    *,
    access_token: str | None = None,
    mps: int | None = None,
    waba_id: str | None = None,
    project_id: str | None = None,
) -> PhoneNumber:
    """Rotate a number's access token, change its mps or WABA id; what is None stays.

    Running processes pick the change up within their cache time (a worker at
    its next look, WAGATE_WORKER_POLL_SECONDS); sends in flight finish with the
    token they started with, so the old token must stay valid at Meta until then.
    """
    if access_token is None and mps is None and waba_id is None:
        raise AdminError("nothing to change: give an access token, --mps or --waba-id")
    if access_token is not None and not access_token.strip():
        raise AdminError("the new access token is empty")
    if mps is not None:
        _check_mps(mps)
    if waba_id is not None:
        check_meta_id(waba_id, "--waba-id")
    await show_number(store, phone_number_id, project_id)
    token = None if access_token is None else access_token.strip()
    if not await store.update_phone_number(
        phone_number_id, access_token=token, mps=mps, waba_id=waba_id
    ):
        raise NumberNotFound(f"no phone number {phone_number_id!r} (see `wagate numbers list`)")
    return await show_number(store, phone_number_id, project_id)


@dataclass(frozen=True, slots=True)
class Removed:
    """A removed number and how many undelivered messages went with it (`force` only)."""

    number: PhoneNumber
    deleted_undelivered: int


async def remove_number(
    store: Admin, phone_number_id: str, *, force: bool = False, project_id: str | None = None
) -> Removed:
    """Delete a number with its messages, statuses and events; NumberBusy if messages are
    still undelivered, unless `force` (then they are deleted unsent)."""
    number = await show_number(store, phone_number_id, project_id)
    undelivered = await store.remove_phone_number(phone_number_id, force=force)
    if undelivered is None:
        raise NumberNotFound(f"no phone number {phone_number_id!r} (see `wagate numbers list`)")
    if undelivered and not force:
        raise NumberBusy(phone_number_id, undelivered)
    return Removed(number, undelivered)


@dataclass(frozen=True, slots=True)
class Demo:
    """What `wagate serve --demo` prints: a project, a sandbox number and its live key.

    `secret` is the key itself, only when this call created it (it is never stored).
    """

    project: Project
    number: PhoneNumber
    key: ApiKey
    secret: str | None


DEMO_PROJECT = "demo"
DEMO_NUMBER = "100000000000001"
DEMO_KEY_LABEL = "demo (make serve)"


async def ensure_demo(store: Admin, clock: Clock, *, sandbox_allowed: bool = True) -> Demo:
    """The demo project, sandbox number and key, created once and kept across restarts.

    Clients set up against the demo key keep working after a restart: an existing
    live key is kept (only its prefix can be shown); a new one is minted only when
    the project has none left (all revoked).
    """
    if not sandbox_allowed:
        raise AdminError(f"--demo needs a sandbox number, but {SANDBOX_OFF}")
    projects = [p for p in await store.list_projects() if p.name == DEMO_PROJECT]
    issued: IssuedKey | None = None
    if projects:
        project = projects[0]
    else:
        project, issued = await create_project(store, clock, DEMO_PROJECT)
    number = await store.get_phone_number(DEMO_NUMBER)
    if number is None:
        number = await add_number(
            store, clock, project_id=project.id, phone_number_id=DEMO_NUMBER, mps=DEFAULT_MPS
        )
    if issued is not None:
        return Demo(project, number, issued.key, issued.secret)
    live = [key for key in await store.list_api_keys(project.id) if key.revoked_at is None]
    if live:
        return Demo(project, number, live[-1], None)
    issued = await create_key(store, clock, project.id, DEMO_KEY_LABEL)
    return Demo(project, number, issued.key, issued.secret)
