"""The event log: seqs strictly increase in commit order, and rows can never change."""

from __future__ import annotations

import asyncio
import sqlite3

import psycopg
import pytest

from coordinator.store import Store
from tests.store.conftest import Backend, event

REFUSED = (sqlite3.DatabaseError, psycopg.Error)


async def test_seq_strictly_increases_under_concurrent_appends(store: Store) -> None:
    seqs = await asyncio.gather(
        *(
            store.write(
                lambda tx, i=i: tx.append_event(  # type: ignore[misc]
                    event(float(i), "tick", f"event {i}", evidence={"i": i})
                )
            )
            for i in range(40)
        )
    )
    assert len(set(seqs)) == 40
    events = await store.events()
    assert [e.seq for e in events] == sorted(seqs)
    # Each returned seq belongs to the event that was appended with it.
    by_seq = {e.seq: e for e in events}
    for index, seq in enumerate(seqs):
        assert by_seq[seq].evidence == {"i": index}


async def test_a_rolled_back_append_leaves_no_hole(store: Store) -> None:
    first = await store.write(lambda tx: tx.append_event(event(1.0, "note", "kept")))
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.append_event(event(2.0, "note", "rolled back"))
            raise RuntimeError("engine step failed")
    second = await store.write(lambda tx: tx.append_event(event(3.0, "note", "kept too")))
    # A reader that has seen `first` asks for after_seq=first and gets the next one.
    assert second == first + 1
    assert [e.message for e in await store.events()] == ["kept", "kept too"]


async def test_events_refuse_update_and_delete(store: Store, backend: Backend) -> None:
    promoted = event(1.0, "decision", "promoted", evidence={"rule": "canary"})
    await store.write(lambda tx: tx.append_event(promoted))
    with backend.raw() as conn:
        with pytest.raises(REFUSED, match="append-only"):
            conn.execute("UPDATE events SET message = 'rewritten'")
        with pytest.raises(REFUSED, match="append-only"):
            conn.execute("DELETE FROM events")
        if backend.name == "postgres":
            with pytest.raises(REFUSED, match="append-only"):
                conn.execute("TRUNCATE events")
    assert [e.message for e in await store.events()] == ["promoted"]
