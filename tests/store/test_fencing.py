"""Fencing: two coordinators on one database; the store refuses the stale leader's
writes, atomically, and a new leader's first write waits out the old one's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from coordinator.store import PostgresStore, StaleLeaderError, Store, StoreError
from tests.store.conftest import Backend


@pytest.fixture
async def second(backend: Backend, store: Store) -> AsyncIterator[Store]:
    """A second coordinator's store on the same database (``store`` migrated it)."""
    other = backend.make()
    await other.open()
    try:
        yield other
    finally:
        await other.close()


async def _snapshot(store: Store) -> tuple[object, ...]:
    return (
        await store.get_deployment("d-1"),
        await store.pending_commands(),
        await store.steps("d-1"),
        await store.events(),
    )


async def test_stale_leader_is_refused_and_nothing_is_applied(store: Store, second: Store) -> None:
    old, new = store, second
    await old.save_deployment("d-1", "production", "2.0", "canary", "baking", b"old", fencing=1)
    await old.save_command("cmd-a", "d-1", "web-1", "deploy", b"a", 1.0, fencing=1)
    # The lease moves: the new leader's first write raises the fence to 2.
    await new.save_deployment("d-1", "production", "2.0", "canary", "baking", b"new", fencing=2)
    before = await _snapshot(new)

    # The old leader, unaware, tries to persist a whole engine step.
    with pytest.raises(StaleLeaderError) as refused:
        async with old.transaction() as tx:
            await tx.append_event(5.0, "promote", "step 2", deployment="d-1")
            await tx.record_step("d-1", 1, 25.0, 5.0)
            await tx.save_command("cmd-b", "d-1", "web-2", "deploy", b"b", 5.0, fencing=1)
            await tx.save_deployment(
                "d-1", "production", "2.0", "canary", "promoting", b"stale", fencing=1
            )
    assert (refused.value.token, refused.value.current) == (1, 2)
    assert isinstance(refused.value, StoreError)

    # Nor one write at a time.
    with pytest.raises(StaleLeaderError):
        await old.save_deployment("d-1", "production", "2.0", "canary", "x", b"stale", fencing=1)
    with pytest.raises(StaleLeaderError):
        await old.save_command("cmd-c", "d-1", "web-3", "deploy", b"c", 6.0, fencing=1)
    with pytest.raises(StaleLeaderError):
        await old.record_step("d-1", 2, 50.0, 6.0, fencing=1)
    with pytest.raises(StaleLeaderError):
        await old.record_command_result("cmd-a", "succeeded", "", 6.0, fencing=1)
    with pytest.raises(StaleLeaderError):
        await old.append_event(6.0, "promote", "stale", fencing=1)

    assert await new.get_command("cmd-b") is None
    assert await _snapshot(new) == before
    assert await new.current_fence() == 2
    deployment = await new.get_deployment("d-1")
    assert deployment is not None
    assert (deployment.snapshot, deployment.fencing) == (b"new", 2)

    # Equal tokens are the same leader; a higher one takes over again.
    await new.save_command("cmd-d", "d-1", "web-1", "rollback", b"d", 7.0, fencing=2)
    await old.save_deployment("d-1", "production", "2.0", "canary", "baking", b"back", fencing=3)
    with pytest.raises(StaleLeaderError):
        await new.save_command("cmd-e", "d-1", "web-1", "deploy", b"e", 8.0, fencing=2)


async def test_a_caught_stale_error_still_rolls_back_the_transaction(
    store: Store, second: Store
) -> None:
    await second.save_deployment("d-1", "staging", "1", "direct", "deploying", b"", fencing=5)
    with pytest.raises(StoreError, match="failed; rolled back"):
        async with store.transaction() as tx:
            await tx.append_event(1.0, "note", "before the stale write")
            with pytest.raises(StaleLeaderError):
                await tx.save_deployment("d-1", "staging", "1", "direct", "x", b"", fencing=4)
            await tx.append_event(2.0, "note", "after the stale write")
    assert await store.events() == []


async def test_new_leader_waits_for_the_old_leaders_open_transaction(
    store: Store, second: Store
) -> None:
    old, new = store, second
    await old.save_deployment("d-1", "production", "2.0", "canary", "baking", b"", fencing=1)

    async with old.transaction() as tx:
        await tx.save_command("cmd-a", "d-1", "web-1", "deploy", b"a", 1.0, fencing=1)
        takeover = asyncio.create_task(
            new.save_deployment("d-1", "production", "2.0", "canary", "held", b"", fencing=2)
        )
        # Give the takeover every chance to run; it must stay blocked on the fence.
        await asyncio.sleep(0.2)
        assert not takeover.done()
        await tx.save_command("cmd-b", "d-1", "web-2", "deploy", b"b", 1.0, fencing=1)
    await takeover

    # The old leader's step, begun before the takeover, committed whole ...
    assert [c.id for c in await new.pending_commands()] == ["cmd-a", "cmd-b"]
    # ... and from now on it is shut out.
    with pytest.raises(StaleLeaderError):
        await old.save_command("cmd-c", "d-1", "web-3", "deploy", b"c", 2.0, fencing=1)
    assert await new.current_fence() == 2


@pytest.mark.integration
async def test_a_frozen_leader_does_not_lock_out_the_next(pg_url: str) -> None:
    """PostgreSQL only: the server ends a session idle in a transaction, releasing the
    fence row (one SQLite file has no server to do that; HA needs PostgreSQL)."""
    async with PostgresStore(pg_url, 0.5) as old, PostgresStore(pg_url, 5.0) as new:
        await new.migrate()
        await new.save_deployment("d-1", "production", "2", "canary", "baking", b"", fencing=1)
        with pytest.raises(StoreError):
            async with old.transaction() as tx:
                await tx.save_command("cmd-a", "d-1", "web-1", "deploy", b"a", 1.0, fencing=1)
                # The old leader now sends nothing (frozen) while the new one, whose lock
                # wait is allowed 5 s, takes over: it gets the fence row once the server
                # ends the idle session (after 2 x 0.5 s), or fails the test.
                await new.save_deployment(
                    "d-1", "production", "2", "canary", "held", b"", fencing=2
                )
        assert await new.get_command("cmd-a") is None
        assert await new.current_fence() == 2
