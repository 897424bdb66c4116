"""On-disk outbox: MQTT messages wait here until the broker acknowledged them.

Guarantees, and the policy where they cannot all hold:

* A message is written (and fsynced: ``synchronous=FULL``) before :meth:`Outbox.put`
  returns, so it survives a crash, a SIGKILL or a power cut of the daemon.
* Messages carry a sequence number that only grows; :meth:`Outbox.peek` hands them
  out in that order and :meth:`Outbox.ack` removes them once the broker's PUBACK
  came. Delivery is therefore *at least once*: a message whose PUBACK was lost with
  the connection is published again, and consumers dedupe by its ``id``.
* Size is bounded by ``max_messages``. When full, the **oldest** messages are dropped
  (a backlog that old is the least useful, and the newest command is the one a user
  is waiting for); each drop adds to the persistent ``dropped`` counter, which the
  bus reports on the status topic.
* A corrupt database file is renamed aside (``<name>.corrupt-<time>``), logged, and a
  fresh one is started: losing the backlog beats refusing to run.
* A full disk (or an I/O error) does not lose messages either: they are kept in
  memory, in order, logged once, and written again at the next put or ack.

Thread-safe: the daemon thread puts, the network thread peeks and acks.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGES = 10_000
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq     INTEGER PRIMARY KEY,
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL,
    created REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# sqlite result codes that mean "storage unavailable for now", not "bug".
_STORAGE_ERRORS = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY}


@dataclass(frozen=True)
class OutboxMessage:
    """One queued MQTT publish."""

    seq: int
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class OutboxError(RuntimeError):
    """The outbox cannot be opened at all (e.g. its folder is not writable)."""


def _is_storage_error(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _STORAGE_ERRORS
    return "full" in str(exc) or "I/O" in str(exc)


class Outbox:
    """A bounded, ordered, durable FIFO of MQTT messages in one sqlite file (WAL)."""

    def __init__(self, path: Path, *, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        if max_messages < 1:
            raise ValueError(f"outbox max_messages must be >= 1, got {max_messages}")
        self.path = Path(path)
        self.max_messages = max_messages
        self._lock = threading.RLock()
        self._spill: list[OutboxMessage] = []  # written to disk when it accepts them again
        self._unacked_deletes: set[int] = set()  # acked but not yet deleted from disk
        self._storage_failing = False
        self._db = self._open()
        self._identity = self._file_identity()
        self._full_warned_at = 0  # drops count when "outbox full" was last logged
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0), COUNT(*) FROM messages").fetchone()
        self._next_seq = int(row[0]) + 1
        self._disk_count = int(row[1])
        self._dropped = self._meta("dropped")
        if self._disk_count:
            log.info("outbox %s: %d message(s) waiting from before", self.path, self._disk_count)

    # ------------------------------------------------------------------ opening

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a queued transcript must survive power loss
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            db.close()
            raise sqlite3.DatabaseError("quick_check failed")
        db.executescript(_SCHEMA)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            db.close()
            raise sqlite3.DatabaseError(f"unknown outbox schema version {version}")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"outbox folder {self.path.parent} cannot be created: {exc}") from exc
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and _is_storage_error(exc):
                raise OutboxError(f"outbox {self.path} cannot be opened: {exc}") from exc
            stamp = time.strftime("%Y%m%d-%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            log.error(
                "outbox %s is corrupt (%s): moved it to %s and started an empty one; "
                "messages queued in it are not delivered",
                self.path,
                exc,
                aside,
            )
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    src.rename(Path(f"{aside}{suffix}"))
            try:
                return self._connect()
            except sqlite3.Error as again:
                raise OutboxError(f"outbox {self.path} cannot be created: {again}") from again

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ counters

    def __len__(self) -> int:
        with self._lock:
            return self._disk_count + len(self._spill) - len(self._unacked_deletes)

    @property
    def dropped(self) -> int:
        """Messages discarded by the oldest-first policy, over the file's lifetime."""
        with self._lock:
            return self._dropped

    @property
    def in_memory(self) -> int:
        """Messages held in memory only because the disk refused them."""
        with self._lock:
            return len(self._spill)

    # ------------------------------------------------------------------ writing

    def put(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Queue one message; returns its sequence number. Never raises for a full disk."""
        return self.put_many([(topic, payload)], qos=qos, retain=retain)[-1]

    def put_many(
        self, items: list[tuple[str, bytes]], *, qos: int = 1, retain: bool = False
    ) -> list[int]:
        """Queue messages that belong together (one transcript) in one transaction."""
        with self._lock:
            self._check_file()
            now = time.time()
            batch = []
            for topic, payload in items:
                batch.append(OutboxMessage(self._next_seq, topic, bytes(payload), qos, retain))
                self._next_seq += 1
            self._spill.extend(batch)  # stays here only if the disk refuses it
            self._enforce_limit()
            self._write_spill(now)
            return [m.seq for m in batch]

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _check_file(self) -> None:
        """If the database file was deleted or replaced under us, sqlite would go on writing
        to the vanished inode and nothing would survive a restart: copy what is queued into
        a new file at the same path."""
        if self._identity is not None and self._file_identity() == self._identity:
            return
        try:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain, created FROM messages ORDER BY seq"
            ).fetchall()
        except sqlite3.Error:
            rows = []
        log.error(
            "outbox %s vanished while running: recreated it with the %d queued message(s)",
            self.path,
            len(rows),
        )
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._db = self._open()
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR REPLACE INTO messages(seq, topic, payload, qos, retain, created)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._save_dropped(self._dropped)
        except sqlite3.Error as exc:
            self._storage_failed("recreate the vanished outbox", exc)
        self._disk_count = int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        self._identity = self._file_identity()

    def _enforce_limit(self) -> None:
        excess = len(self) - self.max_messages
        if excess <= 0:
            return
        # Oldest first: disk rows are older than anything spilled.
        from_disk = min(excess, self._disk_count)
        if from_disk:
            try:
                with self._transaction():
                    cur = self._db.execute(
                        "DELETE FROM messages WHERE seq IN "
                        "(SELECT seq FROM messages ORDER BY seq LIMIT ?)",
                        (from_disk,),
                    )
                    self._save_dropped(self._dropped + cur.rowcount)
                self._dropped += cur.rowcount
                self._disk_count -= cur.rowcount
                excess -= cur.rowcount
            except sqlite3.Error as exc:
                self._storage_failed("drop the oldest messages", exc)
        if excess > 0:
            del self._spill[:excess]
            self._dropped += excess
        # Once per 1000 drops, not once per message: a long outage must not flood the journal.
        if self._dropped - self._full_warned_at >= 1000 or not self._full_warned_at:
            self._full_warned_at = self._dropped
            log.warning(
                "outbox full (%d messages): dropping the oldest; %d dropped in all",
                self.max_messages,
                self._dropped,
            )

    def _save_dropped(self, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES('dropped', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (value,),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _write_spill(self, now: float | None = None) -> None:
        """Move in-memory messages (and pending deletes) to disk, if it takes them."""
        if not self._spill and not self._unacked_deletes:
            return
        now = time.time() if now is None else now
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR REPLACE INTO messages(seq, topic, payload, qos, retain, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(m.seq, m.topic, m.payload, m.qos, int(m.retain), now) for m in self._spill],
                )
                deleted = self._delete(self._unacked_deletes)
                self._save_dropped(self._dropped)
        except sqlite3.Error as exc:
            self._storage_failed("write queued messages", exc)
            return
        self._disk_count += len(self._spill) - deleted
        self._spill.clear()
        self._unacked_deletes.clear()
        if self._storage_failing:
            log.warning("outbox %s: disk writable again, in-memory messages saved", self.path)
            self._storage_failing = False

    def _delete(self, seqs: set[int]) -> int:
        if not seqs:
            return 0
        cur = self._db.executemany("DELETE FROM messages WHERE seq=?", [(s,) for s in seqs])
        return cur.rowcount

    def _storage_failed(self, what: str, exc: sqlite3.Error) -> None:
        if not isinstance(exc, sqlite3.OperationalError) or not _is_storage_error(exc):
            log.error("outbox %s: cannot %s: %s (kept in memory)", self.path, what, exc)
        elif not self._storage_failing:
            log.error(
                "outbox %s: cannot %s: %s - disk full or failing? Messages are kept in "
                "memory (until the process ends) and written when the disk accepts them",
                self.path,
                what,
                exc,
            )
        self._storage_failing = True

    # ------------------------------------------------------------------ reading

    def peek(self, after_seq: int = 0, limit: int = 16) -> list[OutboxMessage]:
        """The oldest ``limit`` messages with ``seq > after_seq``, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain FROM messages WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after_seq, limit + len(self._unacked_deletes)),
            ).fetchall()
            found = [
                OutboxMessage(int(s), t, bytes(p), int(q), bool(r))
                for s, t, p, q, r in rows
                if s not in self._unacked_deletes
            ]
            found.extend(m for m in self._spill if m.seq > after_seq)
            found.sort(key=lambda m: m.seq)
            return found[:limit]

    def ack(self, seqs: list[int] | set[int]) -> None:
        """Remove acknowledged messages (unknown or already dropped seqs are ignored)."""
        seqs = set(seqs)
        if not seqs:
            return
        with self._lock:
            spilled = {m.seq for m in self._spill if m.seq in seqs}
            if spilled:
                self._spill = [m for m in self._spill if m.seq not in spilled]
            on_disk = seqs - spilled - self._unacked_deletes
            try:
                with self._transaction():
                    deleted = self._delete(on_disk)
                self._disk_count -= deleted
            except sqlite3.Error as exc:
                # Not deleted means delivered again after a restart: a duplicate, not a loss.
                self._unacked_deletes.update(on_disk)
                self._storage_failed("delete delivered messages", exc)
                return
            self._write_spill()

    def close(self) -> None:
        with self._lock:
            self._write_spill()
            if self._spill:
                log.error(
                    "outbox %s: %d message(s) could not be written to disk and are lost",
                    self.path,
                    len(self._spill),
                )
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # the WAL is replayed at next open anyway
            self._db.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit db."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction left to roll back
