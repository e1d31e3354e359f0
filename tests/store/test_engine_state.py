"""The engine's snapshot row: absent on a fresh store, replaced whole, fenced, and
committed or rolled back together with the rest of its step."""

from __future__ import annotations

import pytest

from coordinator.store import StaleLeaderError, Store


async def test_a_fresh_store_has_no_engine_state(store: Store) -> None:
    assert await store.load_engine_state() is None


async def test_engine_state_is_replaced_whole(store: Store) -> None:
    await store.save_engine_state(b"\x00first", 10.0, fencing=1)
    await store.save_engine_state(b"\x01second" * 1000, 20.5, fencing=1)
    assert await store.load_engine_state() == (b"\x01second" * 1000, 20.5)


async def test_a_stale_leader_cannot_overwrite_the_engine_state(store: Store) -> None:
    await store.save_engine_state(b"new leader", 5.0, fencing=7)
    with pytest.raises(StaleLeaderError):
        await store.save_engine_state(b"old leader", 6.0, fencing=6)
    assert await store.load_engine_state() == (b"new leader", 5.0)


async def test_engine_state_commits_with_its_step_or_not_at_all(store: Store) -> None:
    await store.save_engine_state(b"before", 1.0, fencing=1)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.transaction() as tx:
            await tx.save_engine_state(b"during", 2.0, fencing=1)
            await tx.save_deployment(
                "d1", "production", "2.0.0", "canary", "baking", b"x", fencing=1
            )
            raise Boom
    assert await store.load_engine_state() == (b"before", 1.0)
    assert await store.get_deployment("d1") is None
