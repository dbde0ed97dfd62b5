"""Projects, API keys and phone numbers: what the admin manages and the door checks."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, func, insert, select, update

from wagate.adapters.store.tables import (
    PHONE_NUMBER_COLUMNS,
    api_keys,
    message_events,
    message_statuses,
    messages,
    pair_pacing,
    phone_numbers,
    projects,
)

# ---- projects and keys ------------------------------------------------------------------

# The project (and its rate limit) of a live key, by the key's hash.
KEY_OWNER = (
    select(
        api_keys.c.project_id,
        projects.c.rate_limit,
        projects.c.marketing_limit,
        projects.c.frequency_cap,
    )
    .join(projects, projects.c.id == api_keys.c.project_id)
    .where(api_keys.c.key_hash == bindparam("b_key_hash"), api_keys.c.revoked_at.is_(None))
)

INSERT_PROJECT = insert(projects)

LIST_PROJECTS = select(
    projects.c.id,
    projects.c.name,
    projects.c.created_at,
    projects.c.rate_limit,
    projects.c.marketing_limit,
    projects.c.frequency_cap,
).order_by(projects.c.created_at, projects.c.id)

SET_PROJECT_POLICIES = (
    update(projects)
    .where(projects.c.id == bindparam("b_project_id"))
    .values(
        marketing_limit=bindparam("b_marketing_limit"),
        frequency_cap=bindparam("b_frequency_cap"),
    )
)
SET_PROJECT_RATE_LIMIT = (
    update(projects)
    .where(projects.c.id == bindparam("b_project_id"))
    .values(rate_limit=bindparam("b_rate_limit"))
)

INSERT_API_KEY = insert(api_keys)

LIST_API_KEYS = (
    select(
        api_keys.c.id,
        api_keys.c.project_id,
        api_keys.c.prefix,
        api_keys.c.label,
        api_keys.c.created_at,
        api_keys.c.revoked_at,
    )
    .where(api_keys.c.project_id == bindparam("b_project_id"))
    .order_by(api_keys.c.created_at, api_keys.c.id)
)

REVOKE_API_KEY = (
    update(api_keys)
    .where(api_keys.c.id == bindparam("b_key_id"), api_keys.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("b_at"))
)

# ---- phone numbers ----------------------------------------------------------------------

INSERT_PHONE_NUMBER = insert(phone_numbers)

# Rows of PHONE_NUMBER_COLUMNS (see `phone_number_of`): every number, or one.
ALL_PHONE_NUMBERS = select(*PHONE_NUMBER_COLUMNS)
PHONE_NUMBER = ALL_PHONE_NUMBERS.where(
    phone_numbers.c.phone_number_id == bindparam("b_phone_number_id")
)

NUMBERS_OF_PROJECT = ALL_PHONE_NUMBERS.where(
    phone_numbers.c.project_id == bindparam("b_project_id")
).order_by(phone_numbers.c.phone_number_id)
EVERY_NUMBER = ALL_PHONE_NUMBERS.order_by(phone_numbers.c.phone_number_id)

# What `numbers update` changes; each statement sets one column, so what is not
# given is not rewritten (and a token rotation never touches the pacing columns).
SET_MPS = (
    update(phone_numbers)
    .where(phone_numbers.c.phone_number_id == bindparam("b_phone_number_id"))
    .values(mps=bindparam("b_mps"))
)
SET_WABA_ID = (
    update(phone_numbers)
    .where(phone_numbers.c.phone_number_id == bindparam("b_phone_number_id"))
    .values(waba_id=bindparam("b_waba_id"))
)

# ---- removing a number and everything stored for it --------------------------------------

_OF_NUMBER = messages.c.phone_number_id == bindparam("b_phone_number_id")

# Messages not yet handed to Meta: queued, or claimed by a worker and being sent.
# Reads the queue's partial indexes (state is a literal) plus the leases index.
UNDELIVERED_COUNT = select(func.count()).where(
    _OF_NUMBER, messages.c.state.in_(("queued", "sending"))
)
_WAMIDS = select(messages.c.upstream_wamid).where(
    _OF_NUMBER, messages.c.upstream_wamid.is_not(None)
)
DELETE_NUMBER_STATUSES = delete(message_statuses).where(
    message_statuses.c.upstream_wamid.in_(_WAMIDS)
)
DELETE_NUMBER_EVENTS = delete(message_events).where(message_events.c.upstream_wamid.in_(_WAMIDS))
DELETE_NUMBER_MESSAGES = delete(messages).where(_OF_NUMBER)
DELETE_NUMBER_PAIRS = delete(pair_pacing).where(
    pair_pacing.c.phone_number_id == bindparam("b_phone_number_id")
)
DELETE_NUMBER = delete(phone_numbers).where(
    phone_numbers.c.phone_number_id == bindparam("b_phone_number_id")
)

# Every stored access token, to seal those stored in plaintext.
ACCESS_TOKENS = select(
    phone_numbers.c.phone_number_id, phone_numbers.c.upstream, phone_numbers.c.access_token
)

SET_ACCESS_TOKEN = (
    update(phone_numbers)
    .where(phone_numbers.c.phone_number_id == bindparam("b_phone_number_id"))
    .values(access_token=bindparam("b_access_token"))
)

# ---- the embedded sandbox's view of its numbers -----------------------------------------

_SANDBOX = phone_numbers.c.upstream == "sandbox"

ANY_SANDBOX_NUMBER = select(phone_numbers.c.phone_number_id).where(_SANDBOX).limit(1)

SANDBOX_CREDENTIAL = select(phone_numbers.c.waba_id, phone_numbers.c.access_token).where(
    phone_numbers.c.phone_number_id == bindparam("b_phone_number_id"), _SANDBOX
)

SANDBOX_WABA_TOKENS = select(phone_numbers.c.access_token).where(
    phone_numbers.c.waba_id == bindparam("b_waba_id"), _SANDBOX
)
