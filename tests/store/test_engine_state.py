"""The engine's snapshot row: absent on a fresh store, replaced whole, fenced, and
committed or rolled back together with the rest of its step."""

from __future__ import annotations

import pytest

from coordinator.store import EngineStateRow, StaleLeaderError, Store
from tests.store.conftest import deployment


def state(snapshot: bytes, time: float, fencing: int) -> EngineStateRow:
    return EngineStateRow(snapshot=snapshot, time=time, fencing=fencing)


async def test_a_fresh_store_has_no_engine_state(store: Store) -> None:
    assert await store.load_engine_state() is None


async def test_engine_state_is_replaced_whole(store: Store) -> None:
    await store.write(lambda tx: tx.save_engine_state(state(b"\x00first", 10.0, 1)))
    second = state(b"\x01second" * 1000, 20.5, 1)
    await store.write(lambda tx: tx.save_engine_state(second))
    assert await store.load_engine_state() == second


async def test_a_stale_leader_cannot_overwrite_the_engine_state(store: Store) -> None:
    await store.write(lambda tx: tx.save_engine_state(state(b"new leader", 5.0, 7)))
    with pytest.raises(StaleLeaderError):
        await store.write(lambda tx: tx.save_engine_state(state(b"old leader", 6.0, 6)))
    assert await store.load_engine_state() == state(b"new leader", 5.0, 7)


async def test_engine_state_commits_with_its_step_or_not_at_all(store: Store) -> None:
    await store.write(lambda tx: tx.save_engine_state(state(b"before", 1.0, 1)))

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.transaction() as tx:
            await tx.save_engine_state(state(b"during", 2.0, 1))
            await tx.save_deployment(deployment("d1", fencing=1))
            raise Boom
    assert await store.load_engine_state() == state(b"before", 1.0, 1)
    assert await store.get_deployment("d1") is None
