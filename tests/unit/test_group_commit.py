"""GroupCommitter on fake in-memory writes: batching, isolation of a bad row, an outage, closing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from wagate.adapters.store.group_commit import GroupCommitter, Row


class BadRow(IntegrityError):
    """What the fake database raises for a row marked bad (a duplicate key, say)."""

    def __init__(self, message: str) -> None:
        super().__init__("INSERT INTO messages ...", {}, Exception(message))


def unavailable() -> OperationalError:
    """What the driver raises when the database refuses connections."""
    return OperationalError(
        "INSERT INTO messages ...", {}, ConnectionRefusedError("connection refused")
    )


class FakeDatabase:
    """Writes rows to a list; a row with `bad` fails whatever transaction holds it."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.committed: list[Row] = []
        self.batch_sizes: list[int] = []
        self.single_writes: list[Row] = []
        self.writing = 0
        self.most_at_once = 0
        self.down = False

    async def write_batch(self, rows: Sequence[Row]) -> None:
        self.writing += 1
        self.most_at_once = max(self.most_at_once, self.writing)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.writing -= 1
        if self.down:
            raise unavailable()
        if any(row.get("bad") for row in rows):
            raise BadRow("the batch holds a bad row")
        self.batch_sizes.append(len(rows))
        self.committed.extend(rows)

    async def write_one(self, row: Row) -> None:
        await asyncio.sleep(0)
        self.single_writes.append(row)
        if self.down:
            raise unavailable()
        if row.get("bad"):
            raise BadRow(f"row {row['i']} is bad")
        self.committed.append(row)

    def committer(
        self, *, writers: int = 1, max_batch: int = 1000, linger_s: float = 0.0
    ) -> GroupCommitter:
        return GroupCommitter(
            self.write_batch,
            self.write_one,
            writers=writers,
            max_batch=max_batch,
            linger_s=linger_s,
        )


async def test_a_submitted_row_is_written_before_submit_returns() -> None:
    database = FakeDatabase()
    committer = database.committer()
    await committer.submit({"i": 1})
    assert database.committed == [{"i": 1}]
    await committer.close()


async def test_concurrent_rows_share_batches() -> None:
    database = FakeDatabase(delay=0.01)
    committer = database.committer()
    await asyncio.gather(*[committer.submit({"i": i}) for i in range(200)])
    assert sorted(row["i"] for row in database.committed) == list(range(200))
    assert committer.rows == 200
    assert committer.batches == len(database.batch_sizes)
    assert committer.batches < 10
    assert database.single_writes == []
    await committer.close()


async def test_rows_arriving_during_a_commit_form_the_next_batch() -> None:
    database = FakeDatabase(delay=0.05)
    committer = database.committer()
    first = asyncio.create_task(committer.submit({"i": 0}))
    await asyncio.sleep(0.01)  # the first batch, of one row, is committing now
    later = [asyncio.create_task(committer.submit({"i": i})) for i in range(1, 50)]
    await asyncio.gather(first, *later)
    assert database.batch_sizes == [1, 49]
    await committer.close()


async def test_max_batch_caps_a_batch() -> None:
    database = FakeDatabase(delay=0.001)
    committer = database.committer(max_batch=10)
    await asyncio.gather(*[committer.submit({"i": i}) for i in range(35)])
    assert max(database.batch_sizes) <= 10
    assert sum(database.batch_sizes) == 35
    await committer.close()


async def test_several_writers_commit_batches_at_once() -> None:
    database = FakeDatabase(delay=0.05)
    committer = database.committer(writers=4, max_batch=5)
    await asyncio.gather(*[committer.submit({"i": i}) for i in range(20)])
    assert database.most_at_once == 4
    assert len(database.committed) == 20
    await committer.close()


async def test_one_writer_commits_one_batch_at_a_time() -> None:
    database = FakeDatabase(delay=0.01)
    committer = database.committer(max_batch=5)
    await asyncio.gather(*[committer.submit({"i": i}) for i in range(20)])
    assert database.most_at_once == 1
    assert database.batch_sizes == [5, 5, 5, 5]
    await committer.close()


async def test_a_bad_row_fails_only_its_own_caller() -> None:
    database = FakeDatabase(delay=0.01)
    committer = database.committer()
    rows = [{"i": i, "bad": i == 7} for i in range(20)]
    results = await asyncio.gather(*[committer.submit(row) for row in rows], return_exceptions=True)
    assert isinstance(results[7], BadRow)
    assert "row 7" in str(results[7])
    assert [r for i, r in enumerate(results) if i != 7] == [None] * 19
    assert sorted(row["i"] for row in database.committed) == [i for i in range(20) if i != 7]
    # The failed batch was retried row by row, in submission order.
    assert [row["i"] for row in database.single_writes] == list(range(20))
    assert committer.rows == 19
    await committer.close()


async def test_an_unavailable_database_fails_the_whole_batch_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = FakeDatabase(delay=0.01)
    database.down = True
    committer = database.committer()
    results = await asyncio.gather(
        *[committer.submit({"i": i}) for i in range(50)], return_exceptions=True
    )
    assert all(isinstance(result, OperationalError) for result in results)
    # No doomed transaction per row, and one log line per batch, not one per caller.
    assert database.single_writes == []
    assert database.committed == []
    failures = [r for r in caplog.records if "not stored" in r.getMessage()]
    assert 1 <= len(failures) <= 2
    assert all(r.exc_info is None for r in failures)
    database.down = False
    await committer.submit({"i": 50})
    assert database.committed == [{"i": 50}]
    await committer.close()


async def test_an_outage_during_isolation_fails_the_remaining_rows_at_once() -> None:
    database = FakeDatabase(delay=0.01)
    committer = database.committer()
    rows = [{"i": i, "bad": i == 0} for i in range(10)]

    async def write_one(row: Row) -> None:
        database.single_writes.append(row)
        if row["i"] >= 3:
            raise unavailable()
        if row.get("bad"):
            raise BadRow("row 0 is bad")
        database.committed.append(row)

    committer = GroupCommitter(database.write_batch, write_one)
    results = await asyncio.gather(*[committer.submit(row) for row in rows], return_exceptions=True)
    assert isinstance(results[0], BadRow)
    assert results[1:3] == [None, None]
    assert all(isinstance(result, OperationalError) for result in results[3:])
    assert [row["i"] for row in database.single_writes] == [0, 1, 2, 3]
    await committer.close()


async def test_a_lone_bad_row_raises_without_a_retry() -> None:
    database = FakeDatabase()
    committer = database.committer()
    with pytest.raises(BadRow, match="batch"):
        await committer.submit({"i": 0, "bad": True})
    assert database.single_writes == []
    await committer.submit({"i": 1})
    assert database.committed == [{"i": 1}]
    await committer.close()


async def test_the_committer_keeps_working_after_a_failed_batch() -> None:
    database = FakeDatabase(delay=0.01)
    committer = database.committer()
    await asyncio.gather(
        committer.submit({"i": 0, "bad": True}),
        committer.submit({"i": 1}),
        return_exceptions=True,
    )
    await asyncio.gather(*[committer.submit({"i": i}) for i in range(2, 12)])
    assert sorted(row["i"] for row in database.committed) == list(range(1, 12))
    await committer.close()


async def test_close_flushes_pending_rows() -> None:
    database = FakeDatabase(delay=0.02)
    committer = database.committer()
    submits = [asyncio.create_task(committer.submit({"i": i})) for i in range(30)]
    await asyncio.sleep(0)  # submitted, not yet committed
    assert database.committed == []
    await committer.close()
    done, pending = await asyncio.wait(submits, timeout=2)
    assert not pending
    assert all(task.exception() is None for task in done)
    assert sorted(row["i"] for row in database.committed) == list(range(30))


async def test_close_waits_for_a_batch_that_is_committing() -> None:
    database = FakeDatabase(delay=0.05)
    committer = database.committer()
    submits = [asyncio.create_task(committer.submit({"i": i})) for i in range(10)]
    await asyncio.sleep(0.01)  # the batch has left the queue and is being written
    await committer.close()
    done, pending = await asyncio.wait(submits, timeout=2)
    assert not pending, "close() abandoned callers of an in-flight batch"
    assert all(task.exception() is None for task in done)
    assert len(database.committed) == 10


async def test_submit_after_close_raises() -> None:
    database = FakeDatabase()
    committer = database.committer()
    await committer.submit({"i": 0})
    await committer.close()
    with pytest.raises(RuntimeError, match="closing"):
        await committer.submit({"i": 1})
    assert database.committed == [{"i": 0}]


async def test_close_without_any_submit_is_fine() -> None:
    committer = FakeDatabase().committer()
    await asyncio.wait_for(committer.close(), timeout=1)
