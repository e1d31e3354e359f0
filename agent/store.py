"""The agent's durable state: one SQLite file in the state directory.

It holds what must survive a restart: the session counter, the next batch sequence
number, the store-and-forward buffer of sealed metric batches, the outbox of command
results, the executed command ids with their first final result, and the deploy state.
Every change is one transaction (WAL), so a crash never leaves a batch half-kept or
a command both run and forgotten; command records are synced to disk before the
command runs (synchronous=FULL for those transactions).

All calls come from the event loop's thread; each is a few small statements.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

DB_NAME: Final = "agent.sqlite3"
# Executed command ids kept for the replay check; older ones are expired by then.
COMMANDS_KEPT: Final = 10_000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS results (n INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    digest TEXT NOT NULL,
    result BLOB
);
"""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Batches: NORMAL (WAL) survives a crash of the agent; a power cut may lose the
        # last batches, never corrupt the file. Command records are written FULL.
        self._db.execute("PRAGMA synchronous=NORMAL")
        # A small page cache: the agent's resident memory is a target, and every
        # query here touches a handful of pages.
        self._db.execute("PRAGMA cache_size=-256")
        with self._db:
            self._db.executescript(_SCHEMA)

    @classmethod
    def open(cls, state_dir: str | Path) -> Store:
        directory = Path(state_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = cls(directory / DB_NAME)
        os.chmod(store.path, 0o600)
        return store

    def close(self) -> None:
        self._db.close()

    # -- small values ---------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def put(self, key: str, value: bytes) -> None:
        with self._db:
            self._put(key, value)

    def _put(self, key: str, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

    def _int(self, key: str, default: int = 0) -> int:
        raw = self.get(key)
        return int(raw) if raw is not None else default

    @property
    def session(self) -> int:
        return self._int("session")

    def next_session(self) -> int:
        """The session counter, raised and saved before every connect."""
        with self._db:
            session = self._int("session") + 1
            self._put("session", str(session).encode())
        return session

    @property
    def dropped(self) -> int:
        return self._int("dropped")

    # -- the store-and-forward buffer --------------------------------------------------

    def append_batch(self, build: Callable[[int], bytes], max_batches: int) -> tuple[int, int]:
        """Give ``build`` the next sequence number and keep what it returns; drop the
        oldest batches beyond ``max_batches``. Returns (seq, how many were dropped)."""
        with self._db:
            seq = self._int("next_seq", 1)
            self._db.execute("INSERT INTO batches (seq, payload) VALUES (?, ?)", (seq, build(seq)))
            self._put("next_seq", str(seq + 1).encode())
            (count,) = self._db.execute("SELECT count(*) FROM batches").fetchone()
            dropped = max(0, count - max_batches)
            if dropped:
                self._db.execute(
                    "DELETE FROM batches WHERE seq IN "
                    "(SELECT seq FROM batches ORDER BY seq LIMIT ?)",
                    (dropped,),
                )
                self._put("dropped", str(self._int("dropped") + dropped).encode())
        return seq, dropped

    def oldest_batch(self) -> tuple[int, bytes] | None:
        row = self._db.execute("SELECT seq, payload FROM batches ORDER BY seq LIMIT 1").fetchone()
        return (row[0], bytes(row[1])) if row else None

    def ack_batch(self, seq: int) -> None:
        with self._db:
            self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,))

    def batch_count(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM batches").fetchone()
        return int(count)

    # -- the command result outbox ---------------------------------------------------

    def enqueue_result(self, payload: bytes) -> None:
        with self._db:
            self._db.execute("INSERT INTO results (payload) VALUES (?)", (payload,))

    def oldest_result(self) -> tuple[int, bytes] | None:
        row = self._db.execute("SELECT n, payload FROM results ORDER BY n LIMIT 1").fetchone()
        return (row[0], bytes(row[1])) if row else None

    def ack_result(self, n: int) -> None:
        with self._db:
            self._db.execute("DELETE FROM results WHERE n = ?", (n,))

    # -- executed commands ------------------------------------------------------------

    def command(self, command_id: str) -> tuple[str, bytes | None] | None:
        """(digest, first final result or None while it runs) of a known id."""
        row = self._db.execute(
            "SELECT digest, result FROM commands WHERE id = ?", (command_id,)
        ).fetchone()
        if row is None:
            return None
        return row[0], bytes(row[1]) if row[1] is not None else None

    @contextlib.contextmanager
    def _durable(self) -> Iterator[None]:
        """One transaction synced to disk before it returns (synchronous=FULL)."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._db:
                yield
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    def begin_command(self, command_id: str, digest: str, accepted: bytes) -> None:
        """Remember ``command_id`` as running and queue its ``accepted`` result, at once."""
        with self._durable():
            self._db.execute(
                "INSERT INTO commands (id, digest, result) VALUES (?, ?, NULL)",
                (command_id, digest),
            )
            self._db.execute("INSERT INTO results (payload) VALUES (?)", (accepted,))
            self._db.execute(
                "DELETE FROM commands WHERE n <= (SELECT max(n) FROM commands) - ?",
                (COMMANDS_KEPT,),
            )

    def remember_command(self, command_id: str, digest: str, result: bytes) -> None:
        """Record the first final result of ``command_id`` and queue it for sending."""
        with self._durable():
            self._db.execute(
                "INSERT INTO commands (id, digest, result) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET result = excluded.result "
                "WHERE commands.result IS NULL",
                (command_id, digest, result),
            )
            self._db.execute("INSERT INTO results (payload) VALUES (?)", (result,))
            self._db.execute(
                "DELETE FROM commands WHERE n <= (SELECT max(n) FROM commands) - ?",
                (COMMANDS_KEPT,),
            )

    def unfinished_commands(self) -> list[tuple[str, str]]:
        """(id, digest) of commands that were running when the agent stopped."""
        rows = self._db.execute(
            "SELECT id, digest FROM commands WHERE result IS NULL ORDER BY n"
        ).fetchall()
        return [(row[0], row[1]) for row in rows]
