"""`wagate backup`: a consistent copy of a live SQLite database, with SQLite's online backup.

A `cp` of a database in WAL mode can copy the main file and its `-wal` at two
different moments: the copy may be torn, or miss every commit not yet
checkpointed. The backup API copies the pages as one read transaction sees
them, so the copy is one committed state; in WAL mode that reader blocks no
writer, so the gateway goes on accepting messages while it runs.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from wagate.adapters.store.engine import is_sqlite
from wagate.adapters.store.secrets import key_file_for


class BackupError(Exception):
    """A backup that cannot be made: the message says why, in one line."""


class NotSqlite(BackupError):
    """The database is not SQLite: PostgreSQL has its own tool (pg_dump)."""


@dataclass(frozen=True, slots=True)
class Backup:
    """What a backup wrote."""

    source: Path
    destination: Path
    pages: int
    # The copy of the generated secret key file (`<database>.key`), when there is one.
    key_file: Path | None


def sqlite_path(url: str) -> Path:
    """The file of a SQLite database URL; NotSqlite for any other database."""
    if not is_sqlite(url):
        raise NotSqlite(
            "wagate backup copies SQLite databases; on PostgreSQL use pg_dump"
            " (docs/production.md, Backups)"
        )
    database = make_url(url).database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise BackupError("the database is in memory: there is nothing to back up")
    return Path(database).resolve()


def backup_sqlite(url: str, destination: Path, *, overwrite: bool = False) -> Backup:
    """Copy the SQLite database at `url` to `destination` with the online backup API.

    The copy is written beside `destination` under a temporary name, checked with
    `PRAGMA integrity_check`, then renamed into place: `destination` is either
    absent or a whole, checked database. The generated key file, if the
    installation has one, is copied to `<destination>.key` (mode 0600): without
    it, the access tokens in the copy cannot be read.
    """
    source = sqlite_path(url)
    if not source.is_file():
        raise BackupError(f"there is no database at {source}")
    destination = destination.expanduser().resolve()
    if destination.is_dir():
        destination = destination / source.name
    if destination == source:
        raise BackupError("the destination is the database itself")
    if destination.exists() and not overwrite:
        raise BackupError(f"{destination} exists already (--force replaces it)")
    if not destination.parent.is_dir():
        raise BackupError(f"no such directory: {destination.parent}")
    partial = destination.with_name(f".{destination.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        pages = _copy(source, partial)
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return Backup(source, destination, pages, _copy_key_file(url, destination))


def _copy(source: Path, target: Path) -> int:
    """The online backup of `source` into a new file `target`, checked; its page count."""
    # The source is opened as a URI so that a path can never create a database.
    reader = sqlite3.connect(f"{source.as_uri()}?mode=rw", uri=True, timeout=30)
    try:
        writer = sqlite3.connect(target)
        try:
            # One step (pages=-1): the copy is the snapshot of one read transaction,
            # which in WAL mode does not hold up the gateway's writers.
            reader.backup(writer, pages=-1)
            writer.commit()
            (verdict,) = writer.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise BackupError(f"the copy failed its integrity check: {verdict}")
            (pages,) = writer.execute("PRAGMA page_count").fetchone()
            # Everything in the one file: a backup is a single file to keep.
            writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            writer.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the backup of {source} failed: {exc}") from None
    finally:
        reader.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    return int(pages)


def _copy_key_file(url: str, destination: Path) -> Path | None:
    key_file = key_file_for(make_url(url))
    if key_file is None or not key_file.is_file():
        return None
    target = Path(f"{destination}.key")
    target.unlink(missing_ok=True)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out, key_file.open("rb") as source:
        shutil.copyfileobj(source, out)
        out.flush()
        os.fsync(out.fileno())
    return target
