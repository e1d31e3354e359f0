"""Fencing: two coordinators on one database; the store refuses the stale leader's
writes, atomically, and a new leader's first write waits out the old one's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from coordinator.store import AlertRow, PostgresStore, StaleLeaderError, Store, StoreError
from tests.store.conftest import Backend, command, deployment, event, result


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
        await store.commands("d-1"),
        await store.events(),
    )


async def test_stale_leader_is_refused_and_nothing_is_applied(store: Store, second: Store) -> None:
    old, new = store, second
    await old.write(lambda tx: tx.save_deployment(deployment(body=b"old", fencing=1)))
    await old.write(lambda tx: tx.save_command(command("cmd-a", fencing=1)))
    # The lease moves: the new leader's first write raises the fence to 2.
    await new.write(lambda tx: tx.save_deployment(deployment(body=b"new", fencing=2)))
    before = await _snapshot(new)

    # The old leader, unaware, tries to persist a whole engine step.
    with pytest.raises(StaleLeaderError) as refused:
        async with old.transaction() as tx:
            await tx.append_event(event(5.0, "promote", "step 2", deployment="d-1"))
            await tx.open_alert(AlertRow(key="k", host=None, rule="cpu", started=5.0))
            await tx.save_command(command("cmd-b", host="web-2", fencing=1))
            await tx.save_deployment(deployment("d-1", "promoting", b"stale", fencing=1))
    assert (refused.value.token, refused.value.current) == (1, 2)
    assert isinstance(refused.value, StoreError)

    # Nor one write at a time.
    with pytest.raises(StaleLeaderError):
        await old.write(lambda tx: tx.save_deployment(deployment("d-1", "x", b"stale", fencing=1)))
    with pytest.raises(StaleLeaderError):
        await old.write(lambda tx: tx.save_command(command("cmd-c", host="web-3", fencing=1)))
    with pytest.raises(StaleLeaderError):
        await old.write(
            lambda tx: tx.record_command_result("cmd-a", result("succeeded"), fencing=1)
        )
    with pytest.raises(StaleLeaderError):
        await old.write(lambda tx: tx.append_event(event(6.0, "promote", "stale"), fencing=1))

    assert await new.get_command("cmd-b") is None
    assert await _snapshot(new) == before
    assert await new.current_fence() == 2
    saved = await new.get_deployment("d-1")
    assert saved is not None
    assert (saved.body, saved.fencing) == (b"new", 2)

    # Equal tokens are the same leader; a higher one takes over again.
    await new.write(lambda tx: tx.save_command(command("cmd-d", fencing=2)))
    await old.write(lambda tx: tx.save_deployment(deployment(body=b"back", fencing=3)))
    with pytest.raises(StaleLeaderError):
        await new.write(lambda tx: tx.save_command(command("cmd-e", fencing=2)))


async def test_a_caught_stale_error_still_rolls_back_the_transaction(
    store: Store, second: Store
) -> None:
    await second.write(lambda tx: tx.save_deployment(deployment("d-1", "deploying", fencing=5)))
    with pytest.raises(StoreError, match="failed; rolled back"):
        async with store.transaction() as tx:
            await tx.append_event(event(1.0, "note", "before the stale write"))
            with pytest.raises(StaleLeaderError):
                await tx.save_deployment(deployment("d-1", "x", fencing=4))
            await tx.append_event(event(2.0, "note", "after the stale write"))
    assert await store.events() == []


async def test_new_leader_waits_for_the_old_leaders_open_transaction(
    store: Store, second: Store
) -> None:
    old, new = store, second
    await old.write(lambda tx: tx.save_deployment(deployment(fencing=1)))

    async with old.transaction() as tx:
        await tx.save_command(command("cmd-a", fencing=1))
        takeover = asyncio.create_task(
            new.write(lambda tx: tx.save_deployment(deployment("d-1", "held", fencing=2)))
        )
        # Give the takeover every chance to run; it must stay blocked on the fence.
        await asyncio.sleep(0.2)
        assert not takeover.done()
        await tx.save_command(command("cmd-b", host="web-2", fencing=1))
    await takeover

    # The old leader's step, begun before the takeover, committed whole ...
    assert [c.id for c in await new.commands("d-1")] == ["cmd-a", "cmd-b"]
    # ... and from now on it is shut out.
    with pytest.raises(StaleLeaderError):
        await old.write(lambda tx: tx.save_command(command("cmd-c", host="web-3", fencing=1)))
    assert await new.current_fence() == 2


@pytest.mark.integration
async def test_a_frozen_leader_does_not_lock_out_the_next(pg_url: str) -> None:
    """PostgreSQL only: the server ends a session idle in a transaction, releasing the
    fence row (one SQLite file has no server to do that; HA needs PostgreSQL)."""
    async with PostgresStore(pg_url, 0.5) as old, PostgresStore(pg_url, 5.0) as new:
        await new.migrate()
        await new.write(lambda tx: tx.save_deployment(deployment(fencing=1)))
        with pytest.raises(StoreError):
            async with old.transaction() as tx:
                await tx.save_command(command("cmd-a", fencing=1))
                # The old leader now sends nothing (frozen) while the new one, whose lock
                # wait is allowed 5 s, takes over: it gets the fence row once the server
                # ends the idle session (after 2 x 0.5 s), or fails the test.
                await new.write(lambda tx: tx.save_deployment(deployment("d-1", "held", fencing=2)))
        assert await new.get_command("cmd-a") is None
        assert await new.current_fence() == 2
