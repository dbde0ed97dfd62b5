"""Administering numbers and the demo, on the in-memory store: what an operator may do and
what they are told to correct."""

from __future__ import annotations

import pytest

from tests.conformance.test_store_behaviour import new_message
from tests.unit.memory import Memory
from wagate.core import admin
from wagate.domain.model import PhoneNumber


async def project(memory: Memory) -> str:
    created, _ = await admin.create_project(memory.store, memory.clock, "unit")
    return created.id


async def add(
    memory: Memory, project_id: str, phone_number_id: str, **kwargs: object
) -> PhoneNumber:
    return await admin.add_number(
        memory.store,
        memory.clock,
        project_id=project_id,
        phone_number_id=phone_number_id,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "phone_number_id", ["abc", "12a", "+447700900123", "", "1" * 65, "\uff11\uff12"]
)
async def test_a_phone_number_id_is_digits_like_metas(phone_number_id: str) -> None:
    memory = Memory()
    with pytest.raises(admin.AdminError, match="digits only"):
        await add(memory, await project(memory), phone_number_id)


async def test_a_meta_number_needs_its_real_waba_id_and_a_sandbox_one_gets_one_made_up() -> None:
    memory = Memory()
    project_id = await project(memory)
    with pytest.raises(admin.AdminError, match="--waba-id"):
        await add(memory, project_id, "1", upstream="meta", access_token="EAAG")
    with pytest.raises(admin.AdminError, match="digits only"):
        await add(memory, project_id, "1", upstream="meta", access_token="EAAG", waba_id="w1")
    meta = await add(memory, project_id, "1", upstream="meta", access_token="EAAG", waba_id="77")
    assert meta.waba_id == "77"
    sandbox = await add(memory, project_id, "2")
    assert sandbox.waba_id.isdigit()


async def test_numbers_are_listed_and_shown_per_project() -> None:
    memory = Memory()
    mine, theirs = await project(memory), await project(memory)
    second, first = await add(memory, mine, "20"), await add(memory, mine, "10")
    other = await add(memory, theirs, "30")
    assert await admin.list_numbers(memory.store, mine) == [first, second]
    assert await admin.list_numbers(memory.store) == [first, second, other]
    assert await admin.show_number(memory.store, "30") == other
    with pytest.raises(admin.NumberNotFound):
        await admin.show_number(memory.store, "30", project_id=mine)
    with pytest.raises(admin.AdminError, match="no project"):
        await admin.list_numbers(memory.store, "prj_missing")


async def test_an_update_rotates_the_token_or_changes_mps_and_keeps_the_rest() -> None:
    memory = Memory()
    project_id = await project(memory)
    number = await add(memory, project_id, "1", access_token="old", mps=80)
    rotated = await admin.update_number(memory.store, "1", access_token=" new\n")
    assert rotated == PhoneNumber("1", number.waba_id, project_id, "sandbox", "new", 80)
    slower = await admin.update_number(memory.store, "1", mps=20)
    assert (slower.access_token, slower.mps) == ("new", 20)
    with pytest.raises(admin.AdminError, match="nothing to change"):
        await admin.update_number(memory.store, "1")
    with pytest.raises(admin.AdminError, match="empty"):
        await admin.update_number(memory.store, "1", access_token="  ")
    with pytest.raises(admin.AdminError, match="at least 1"):
        await admin.update_number(memory.store, "1", mps=0)
    with pytest.raises(admin.NumberNotFound):
        await admin.update_number(memory.store, "2", mps=5)
    with pytest.raises(admin.NumberNotFound):
        await admin.update_number(memory.store, "1", mps=5, project_id="prj_other")
    assert (await admin.show_number(memory.store, "1")).mps == 20


async def test_a_number_with_queued_messages_is_removed_only_with_force() -> None:
    memory = Memory()
    number = await add(memory, await project(memory), "1")
    for _ in range(3):
        await memory.store.add_message(new_message(number))
    with pytest.raises(admin.NumberBusy, match="3 undelivered") as refused:
        await admin.remove_number(memory.store, "1")
    assert "--force" in str(refused.value)
    assert await admin.show_number(memory.store, "1") == number
    with pytest.raises(admin.NumberNotFound):
        await admin.remove_number(memory.store, "1", force=True, project_id="prj_other")
    removed = await admin.remove_number(memory.store, "1", force=True)
    assert (removed.number, removed.deleted_undelivered) == (number, 3)
    assert memory.database.messages == {}
    with pytest.raises(admin.NumberNotFound):
        await admin.remove_number(memory.store, "1")


async def test_an_idle_number_is_removed_without_force() -> None:
    memory = Memory()
    await add(memory, await project(memory), "1")
    assert (await admin.remove_number(memory.store, "1")).deleted_undelivered == 0
    assert await memory.store.get_phone_number("1") is None


async def test_the_demo_key_survives_restarts_and_a_new_one_is_minted_only_when_none_is_left() -> (
    None
):
    memory = Memory()
    first = await admin.ensure_demo(memory.store, memory.clock)
    assert first.secret is not None
    assert first.secret.startswith(first.key.prefix)
    again = await admin.ensure_demo(memory.store, memory.clock)
    assert again.secret is None  # shown once, when created
    assert again.key == first.key
    assert again.key.revoked_at is None
    assert (again.project, again.number) == (first.project, first.number)
    assert len(await memory.store.list_api_keys(first.project.id)) == 1

    await admin.revoke_key(memory.store, memory.clock, first.key.id)
    minted = await admin.ensure_demo(memory.store, memory.clock)
    assert minted.secret is not None
    assert minted.key.id != first.key.id
    assert minted.key.label == admin.DEMO_KEY_LABEL
