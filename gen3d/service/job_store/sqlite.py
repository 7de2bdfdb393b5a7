"""The sqlite backend (the default): records in an SQLite file, files in one folder per job.

Layout under the configured folder: ``jobs.sqlite3`` (one row per job: its record as JSON, its
request, and the columns the queries need) and ``files/<job id>/<name>`` for the image, the
cut-out and the asset. A change writes its files first (each under a temporary name, then
renamed into place), then commits the record in one transaction. All database work runs on one
thread of its own, so the event loop never waits on the disk.

What survives what: every acknowledged write survives a crash of any process (it is in the
operating system's hands). A new job (``durable``: its request and record, what ``202``
promises) is also synced to disk before it is acknowledged, so it survives a crash of the
machine too; the rest can be recomputed from the request, so it is not synced on every write
(syncing each stage's file cost more than the job path's whole overhead on a slow disk). After a
machine crash, ``repair`` finds the files that never reached the disk and runs their jobs again.

Several processes on one machine may share the folder (SQLite locks the file); machines may not.
"""

import asyncio
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gen3d.service.job_store.records import REQUEST_FILE, JobRecord, StoredFile
from gen3d.service.job_store.store import Backend, Change, Usage

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    request BLOB,        -- the request the job was submitted with (REQUEST_FILE)
    due REAL,            -- held_until while the job is open, else NULL
    finished REAL,       -- when it finished, else NULL
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (due) WHERE due IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished) WHERE finished IS NOT NULL;
"""
#: The layout above (``PRAGMA user_version``); a folder written with another one is refused.
LAYOUT = 1
#: A job folder without a row this old is a leftover of a crash between writing and committing.
ORPHAN_AGE_S = 60.0


def write_files(folder: Path, files: dict[str, StoredFile]) -> None:
    """Write each file under a temporary name and rename it into place: never seen half-written."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, stored in files.items():
        partial = folder / f".{name}.partial"
        partial.write_bytes(stored.data)
        os.replace(partial, folder / name)


class SqliteBackend(Backend):
    """Jobs in ``folder``.

    Args:
        folder: where the database and the files live (created if missing).
        clock: wall-clock seconds (tests pass a fake one).
    """

    def __init__(self, folder: Path, clock: Callable[[], float] = time.time) -> None:
        self.where = str(folder)
        self.files = folder / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store")
        # Used only on that thread from here on; autocommit mode, transactions begun by hand.
        self._db = sqlite3.connect(folder / "jobs.sqlite3", isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # FULL for durable writes (``_transact``)
        self._check_layout(folder)
        self._sweep_orphans()
        self.repair()

    async def now(self) -> float:
        return self._clock()

    async def transact(self, job_id: str, change: Change, durable: bool = False) -> JobRecord | None:
        return await self._on_thread(self._transact, job_id, change, durable)

    async def load(self, job_id: str) -> JobRecord | None:
        return await self._on_thread(self._load, job_id)

    async def read_file(self, job_id: str, name: str) -> bytes | None:
        return await self._on_thread(self._read_file, job_id, name)

    async def due(self, limit: int) -> list[str]:
        query = "SELECT id FROM jobs WHERE due <= ? ORDER BY due LIMIT ?"
        return await self._on_thread(lambda: [row[0] for row in self._db.execute(query, (self._clock(), limit))])

    async def finished_before(self, cutoff: float) -> list[str]:
        query = "SELECT id FROM jobs WHERE finished < ?"
        return await self._on_thread(lambda: [row[0] for row in self._db.execute(query, (cutoff,))])

    async def delete(self, job_id: str) -> None:
        await self._on_thread(self._delete, job_id)

    async def close(self) -> None:
        await self._on_thread(self._db.close)
        self._thread.shutdown()

    def repair(self) -> None:
        """Jobs whose files a machine crash lost (not on disk, or short) forget them and run again."""
        now = self._clock()
        for job_id, raw in self._db.execute("SELECT id, record FROM jobs").fetchall():
            record = JobRecord.model_validate_json(raw)
            lost = {name for name, meta in record.files.items() if name != REQUEST_FILE and self._size(job_id, name) != meta.bytes}
            if lost:
                record.lost(lost, now)
                self._db.execute("BEGIN IMMEDIATE")
                self._update(record)
                self._db.execute("COMMIT")

    # -- on the store's thread -------------------------------------------------------------------

    async def _on_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _load(self, job_id: str) -> JobRecord | None:
        row = self._db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRecord.model_validate_json(row[0]) if row else None

    def _read_file(self, job_id: str, name: str) -> bytes | None:
        if name == REQUEST_FILE:
            row = self._db.execute("SELECT request FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return row[0] if row else None
        path = self.files / job_id / name
        return path.read_bytes() if path.is_file() else None

    def _size(self, job_id: str, name: str) -> int | None:
        path = self.files / job_id / name
        return path.stat().st_size if path.is_file() else None

    def _transact(self, job_id: str, change: Change, durable: bool) -> JobRecord | None:
        if durable:  # this commit syncs the log to disk (and every commit before it)
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("BEGIN IMMEDIATE")  # the write lock now: no other writer between read and write
        try:
            current = self._load(job_id)
            jobs, held = self._db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM jobs").fetchone()
            update = change(current, Usage(jobs, held), self._clock())
            if update is None:
                self._db.execute("ROLLBACK")
                return current
            on_disk = {name: stored for name, stored in update.files.items() if name != REQUEST_FILE}
            if on_disk:
                write_files(self.files / job_id, on_disk)
            self._update(update.record)
            if REQUEST_FILE in update.files:
                self._db.execute("UPDATE jobs SET request = ? WHERE id = ?", (update.files[REQUEST_FILE].data, job_id))
            self._db.execute("COMMIT")
            return update.record
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            if durable:
                self._db.execute("PRAGMA synchronous=NORMAL")

    def _update(self, record: JobRecord) -> None:
        """Insert or update the record's row (inside the caller's transaction)."""
        self._db.execute(
            "INSERT INTO jobs (id, record, due, finished, bytes) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
            "SET record = excluded.record, due = excluded.due, finished = excluded.finished, bytes = excluded.bytes",
            (record.id, record.model_dump_json(), record.held_until if record.open else None, record.finished, record.bytes),
        )

    def _delete(self, job_id: str) -> None:
        self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        shutil.rmtree(self.files / job_id, ignore_errors=True)

    def _check_layout(self, folder: Path) -> None:
        """Create the tables in a new database; refuse one written with another layout."""
        (layout,) = self._db.execute("PRAGMA user_version").fetchone()
        tables = self._db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if tables and layout != LAYOUT:
            raise ValueError(
                f"job_store: {folder} holds a job store of layout {layout}, not {LAYOUT}: "
                "move it away (or set job_store.path to another folder)"
            )
        self._db.executescript(SCHEMA + f"PRAGMA user_version = {LAYOUT};")

    def _sweep_orphans(self) -> None:
        """Delete job folders that no row names (a crash came between their files and the commit)."""
        known = {row[0] for row in self._db.execute("SELECT id FROM jobs")}
        cutoff = time.time() - ORPHAN_AGE_S  # a folder's age is measured on the file system's clock
        for folder in self.files.iterdir():
            if folder.name not in known and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
