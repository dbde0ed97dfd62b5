"""SqlStore and its migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    Connection,
    Index,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    update,
)

from wagate.adapters.store.migrate import alembic_config, migrate
from wagate.adapters.store.sql import SqlStore
from wagate.adapters.store.tables import messages, metadata
from wagate.core import admin
from wagate.core.access import hash_key
from wagate.domain.model import KeyOwner, MessageQuery, NewMessage, PhoneNumber, Project
from wagate.ports import IdempotencyConflict, PhoneNumberGone, SystemClock

CLOCK = SystemClock()


# ---- helpers -----------------------------------------------------------------------


async def new_number(store: SqlStore, project_id: str | None = None) -> PhoneNumber:
    """A phone number (in a new project unless one is given)."""
    if project_id is None:
        project, _ = await admin.create_project(store, CLOCK, "store test")
        project_id = project.id
    return await admin.add_number(
        store, CLOCK, project_id=project_id, phone_number_id=str(uuid.uuid4().int % 10**15)
    )


def new_message(
    number: PhoneNumber,
    *,
    created_at: int = 1_700_000_000_000,
    idempotency_key: str | None = None,
) -> NewMessage:
    """A valid message for a number."""
    return NewMessage(
        id="wamid." + uuid.uuid4().hex,
        project_id=number.project_id,
        phone_number_id=number.phone_number_id,
        recipient_input="+44 7700 900123",
        recipient="447700900123",
        recipient_kind="phone",
        request='{"template":{"name":"promo_template"}}',
        template_name="promo_template",
        template_language="en_US",
        biz_opaque_callback_data=None,
        created_at=created_at,
        expires_at=created_at + 86_400_000,
        idempotency_key=idempotency_key,
        request_hash=None if idempotency_key is None else "h" * 64,
    )


# ---- migrations --------------------------------------------------------------------


def _normalised_default(text: str | None) -> str | None:
    """A server default without the parentheses, quotes and casts reflection adds."""
    if text is None:
        return None
    value = text.strip()
    value = re.sub(r"::[a-z ]+(\(\d+\))?$", "", value)  # PostgreSQL: ''::character varying
    while value.startswith("(") and value.endswith(")"):
        value = value[1:-1].strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        value = value[1:-1]
    return value


def _compare_server_default(
    context: MigrationContext,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool:
    """Alembic's SQLite comparison calls ('') and '' different: compare them normalised."""
    return _normalised_default(inspected_default) != _normalised_default(rendered_metadata_default)


def schema_diff(target: MetaData) -> Callable[[Connection], list[Any]]:
    """What autogenerate would change to turn the database into `target`."""

    def run(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": _compare_server_default,
                "target_metadata": target,
            },
        )
        return list(compare_metadata(context, target))

    return run


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def test_migrations_produce_exactly_the_schema_in_tables_py(store: SqlStore) -> None:
    async with store.engine.connect() as connection:
        diff = await connection.run_sync(schema_diff(metadata))
    assert diff == []


def _copy() -> MetaData:
    """tables.py's schema, in a MetaData of its own that a test may change."""
    copy = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(copy)
    return copy


def _extra_column(target: MetaData) -> None:
    target.tables["messages"].append_column(Column("priority", String(8), nullable=True))


def _new_table(target: MetaData) -> None:
    Table("webhooks", target, Column("id", String(40), primary_key=True))


def _wider_column(target: MetaData) -> None:
    Table(
        "phone_numbers", target, Column("waba_id", String(80), nullable=False), extend_existing=True
    )


def _other_default(target: MetaData) -> None:
    Table(
        "api_keys",
        target,
        Column("label", String(200), nullable=False, server_default="unnamed"),
        extend_existing=True,
    )


def _nullable_column(target: MetaData) -> None:
    Table("messages", target, Column("request", Text, nullable=True), extend_existing=True)


def _extra_index(target: MetaData) -> None:
    Index("ix_messages_recipient", target.tables["messages"].c.recipient)


MUTATIONS = {
    "column added": (_extra_column, "add_column"),
    "table added": (_new_table, "add_table"),
    "type changed": (_wider_column, "modify_type"),
    "server default changed": (_other_default, "modify_default"),
    "nullability changed": (_nullable_column, "modify_nullable"),
    "index added": (_extra_index, "add_index"),
}


async def test_an_unchanged_copy_of_the_schema_has_no_diff(store: SqlStore) -> None:
    async with store.engine.connect() as connection:
        assert await connection.run_sync(schema_diff(_copy())) == []


@pytest.mark.parametrize(("mutate", "operation"), MUTATIONS.values(), ids=list(MUTATIONS))
async def test_a_schema_change_without_a_migration_shows_in_the_diff(
    store: SqlStore, mutate: Callable[[MetaData], None], operation: str
) -> None:
    # The empty diff above means something only if the comparison sees changes.
    changed = _copy()
    mutate(changed)
    async with store.engine.connect() as connection:
        diff = await connection.run_sync(schema_diff(changed))
    flat = [item for entry in diff for item in (entry if isinstance(entry, list) else [entry])]
    assert operation in {item[0] for item in flat}, diff


async def test_the_queue_index_is_partial_on_queued_rows(store: SqlStore) -> None:
    def indexes(connection: Connection) -> dict[str, dict[str, Any]]:
        return {str(ix["name"]): dict(ix) for ix in inspect(connection).get_indexes("messages")}

    async with store.engine.connect() as connection:
        found = await connection.run_sync(indexes)
    where_key = "sqlite_where" if store.is_sqlite else "postgresql_where"
    where = str(found["ix_messages_queue"]["dialect_options"][where_key])
    assert "state" in where
    assert "queued" in where
    assert found["uq_messages_idempotency"]["unique"]


async def test_migrating_twice_is_a_no_op(store: SqlStore, database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    number = await new_number(store)
    message = new_message(number)
    await store.add_message(message)
    async with store.engine.connect() as connection:
        assert await connection.run_sync(current_revision) == head
    await store.engine.dispose()  # SQLite: let the migration take the write lock

    await asyncio.to_thread(migrate, database_url)

    async with store.engine.connect() as connection:
        assert await connection.run_sync(current_revision) == head
        assert await connection.run_sync(schema_diff(metadata)) == []
    assert await store.get_message(number.phone_number_id, message.id) is not None
    assert await store.get_phone_number(number.phone_number_id) == number


# ---- group commit ------------------------------------------------------------------


async def test_concurrent_messages_all_commit_in_shared_batches(store: SqlStore) -> None:
    number = await new_number(store)
    batches_before = store.committer.batches
    sent = [new_message(number, created_at=1_700_000_000_000 + i) for i in range(500)]

    await asyncio.gather(*[store.add_message(message) for message in sent])

    batches = store.committer.batches - batches_before
    assert 1 <= batches < len(sent) // 10
    for message in sent:
        stored = await store.get_message(number.phone_number_id, message.id)
        assert stored is not None, message.id
        assert stored.created_at == message.created_at
        assert stored.status == "pending"
    page = await store.list_messages(MessageQuery(number.phone_number_id, limit=1000))
    assert len(page) == 500
    assert len({m.seq for m in page}) == 500


async def test_a_committed_message_reads_back_field_by_field(store: SqlStore) -> None:
    number = await new_number(store)
    message = new_message(number, idempotency_key="order-1")
    await store.add_message(message)
    stored = await store.get_message(number.phone_number_id, message.id)
    assert stored is not None
    for field in (
        "id",
        "project_id",
        "phone_number_id",
        "recipient_input",
        "recipient",
        "recipient_kind",
        "request",
        "template_name",
        "template_language",
        "biz_opaque_callback_data",
        "created_at",
        "idempotency_key",
        "request_hash",
    ):
        assert getattr(stored, field) == getattr(message, field), field
    assert stored.updated_at == message.created_at
    assert stored.upstream_wamid is None
    assert stored.error_code is None


async def test_get_message_is_scoped_to_its_phone_number(store: SqlStore) -> None:
    number = await new_number(store)
    other = await new_number(store, number.project_id)
    message = new_message(number)
    await store.add_message(message)
    assert await store.get_message(other.phone_number_id, message.id) is None
    assert await store.get_message(number.phone_number_id, "wamid.nothing") is None


async def test_a_duplicate_key_in_one_batch_fails_alone(store: SqlStore) -> None:
    number = await new_number(store)
    batches_before = store.committer.batches
    rows_before = store.committer.rows
    sent = [new_message(number, idempotency_key=f"key-{i}") for i in range(10)]
    sent.insert(6, new_message(number, idempotency_key="key-3"))  # a later duplicate

    results = await asyncio.gather(
        *[store.add_message(message) for message in sent], return_exceptions=True
    )

    assert isinstance(results[6], IdempotencyConflict)
    assert [r for i, r in enumerate(results) if i != 6] == [None] * 10
    # They shared one batch, which failed and was retried row by row.
    assert store.committer.batches == batches_before
    assert store.committer.rows - rows_before == 10
    for i, message in enumerate(sent):
        stored = await store.get_message(number.phone_number_id, message.id)
        assert (stored is None) == (i == 6), i
    first = await store.find_by_idempotency_key(number.project_id, "key-3")
    assert first is not None
    assert first.id == sent[3].id


async def test_a_duplicate_key_in_a_later_batch_conflicts(store: SqlStore) -> None:
    number = await new_number(store)
    await store.add_message(new_message(number, idempotency_key="order-9"))
    with pytest.raises(IdempotencyConflict):
        await store.add_message(new_message(number, idempotency_key="order-9"))
    # Keys are per project, and messages without a key never collide.
    other = await new_number(store)
    await store.add_message(new_message(other, idempotency_key="order-9"))
    await store.add_message(new_message(number))
    await store.add_message(new_message(number))


async def test_a_released_key_can_be_used_again(store: SqlStore) -> None:
    number = await new_number(store)
    first = new_message(number, idempotency_key="reuse")
    await store.add_message(first)
    await store.release_idempotency_key(first.id)
    assert await store.find_by_idempotency_key(number.project_id, "reuse") is None
    second = new_message(number, idempotency_key="reuse")
    await store.add_message(second)
    found = await store.find_by_idempotency_key(number.project_id, "reuse")
    assert found is not None
    assert found.id == second.id


async def test_a_message_for_an_unknown_number_is_refused(store: SqlStore) -> None:
    number = await new_number(store)
    ghost = PhoneNumber("999", "1", number.project_id, "sandbox", "", 80)
    # The foreign key refuses it; the store says which number is gone.
    with pytest.raises(PhoneNumberGone, match="999"):
        await store.add_message(new_message(ghost))


# ---- listing -----------------------------------------------------------------------

T0 = 1_700_000_000_000


async def _listed(store: SqlStore) -> tuple[PhoneNumber, list[NewMessage]]:
    """Six messages of a number, a second apart, plus two of another number."""
    number = await new_number(store)
    other = await new_number(store, number.project_id)
    sent = []
    for i in range(6):
        message = new_message(number, created_at=T0 + i * 1000)
        await store.add_message(message)
        sent.append(message)
    for i in range(2):
        await store.add_message(new_message(other, created_at=T0 + i * 1000))
    async with store.engine.begin() as connection:
        await connection.execute(
            update(messages)
            .where(messages.c.id.in_([sent[1].id, sent[4].id]))
            .values(status="delivered")
        )
    return number, sent


def ids(page: list[Any]) -> list[str]:
    return [message.id for message in page]


async def test_listing_is_newest_first_and_per_number(store: SqlStore) -> None:
    number, sent = await _listed(store)
    page = await store.list_messages(MessageQuery(number.phone_number_id))
    assert ids(page) == [m.id for m in reversed(sent)]
    assert [m.seq for m in page] == sorted((m.seq for m in page), reverse=True)


async def test_listing_limit(store: SqlStore) -> None:
    number, sent = await _listed(store)
    page = await store.list_messages(MessageQuery(number.phone_number_id, limit=2))
    assert ids(page) == [sent[5].id, sent[4].id]


async def test_listing_by_status(store: SqlStore) -> None:
    number, sent = await _listed(store)
    delivered = await store.list_messages(MessageQuery(number.phone_number_id, status="delivered"))
    assert ids(delivered) == [sent[4].id, sent[1].id]
    pending = await store.list_messages(MessageQuery(number.phone_number_id, status="pending"))
    assert ids(pending) == [sent[5].id, sent[3].id, sent[2].id, sent[0].id]
    assert await store.list_messages(MessageQuery(number.phone_number_id, status="failed")) == []


async def test_listing_by_time_is_inclusive(store: SqlStore) -> None:
    number, sent = await _listed(store)
    window = MessageQuery(number.phone_number_id, since=T0 + 1000, until=T0 + 3000)
    assert ids(await store.list_messages(window)) == [sent[3].id, sent[2].id, sent[1].id]
    since = MessageQuery(number.phone_number_id, since=T0 + 4500)
    assert ids(await store.list_messages(since)) == [sent[5].id]


async def test_listing_pages_with_seq_cursors(store: SqlStore) -> None:
    number, sent = await _listed(store)
    first = await store.list_messages(MessageQuery(number.phone_number_id, limit=2))
    older = await store.list_messages(
        MessageQuery(number.phone_number_id, limit=2, after_seq=first[-1].seq)
    )
    assert ids(older) == [sent[3].id, sent[2].id]
    # Paging `before` goes back towards newer messages, oldest first.
    newer = await store.list_messages(
        MessageQuery(number.phone_number_id, limit=2, before_seq=older[0].seq)
    )
    assert ids(newer) == [sent[4].id, sent[5].id]
    filtered = await store.list_messages(
        MessageQuery(number.phone_number_id, status="delivered", after_seq=older[0].seq)
    )
    assert ids(filtered) == [sent[1].id]


# ---- projects, keys, numbers -------------------------------------------------------


async def test_a_revoked_key_no_longer_finds_its_project(store: SqlStore) -> None:
    project, issued = await admin.create_project(store, CLOCK, "keys")
    second = await admin.create_key(store, CLOCK, project.id, label="second")
    assert await store.find_project_by_key_hash(hash_key(issued.secret)) == KeyOwner(project.id)

    assert await store.revoke_api_key(issued.key.id, at=T0) is True

    assert await store.find_project_by_key_hash(hash_key(issued.secret)) is None
    assert await store.find_project_by_key_hash(hash_key(second.secret)) == KeyOwner(project.id)
    assert await store.revoke_api_key(issued.key.id, at=T0 + 1) is False
    assert await store.revoke_api_key("key_nothing", at=T0) is False
    keys = {key.id: key for key in await store.list_api_keys(project.id)}
    assert keys[issued.key.id].revoked_at == T0
    assert keys[second.key.id].revoked_at is None


async def test_an_unknown_key_hash_finds_nothing(store: SqlStore) -> None:
    assert await store.find_project_by_key_hash(hash_key("wg_nothing")) is None


async def test_a_taken_phone_number_id_is_a_value_error(store: SqlStore) -> None:
    number = await new_number(store)
    other_project, _ = await admin.create_project(store, CLOCK, "other")
    taken = PhoneNumber(number.phone_number_id, "2", other_project.id, "sandbox", "", 10)
    with pytest.raises(ValueError, match=number.phone_number_id):
        await store.add_phone_number(taken, created_at=T0)
    assert await store.get_phone_number(number.phone_number_id) == number


async def test_a_phone_number_of_an_unknown_project_is_a_value_error(store: SqlStore) -> None:
    orphan = PhoneNumber("12345", "2", "prj_nothing", "sandbox", "", 10)
    with pytest.raises(ValueError, match="12345"):
        await store.add_phone_number(orphan, created_at=T0)
    assert await store.get_phone_number("12345") is None


async def test_projects_list_oldest_first(store: SqlStore) -> None:
    made = [Project(f"prj_{9 - i}", f"p{i}", T0 + i) for i in range(3)]
    for project in reversed(made):
        await store.create_project(project)
    assert await store.list_projects() == made


async def test_a_keys_lookup_brings_its_projects_rate_limit(store: SqlStore) -> None:
    project, issued = await admin.create_project(store, CLOCK, "limited", rate_limit=30)
    found = await store.find_project_by_key_hash(hash_key(issued.secret))
    assert found == KeyOwner(project.id, 30)
    assert await store.set_project_rate_limit(project.id, None) is True
    assert await store.find_project_by_key_hash(hash_key(issued.secret)) == KeyOwner(project.id)
    assert await store.set_project_rate_limit("prj_nothing", 5) is False
    [listed] = [p for p in await store.list_projects() if p.id == project.id]
    assert listed.rate_limit is None
