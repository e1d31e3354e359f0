"""Transactions, restarts, and a database that is slow, locked or gone."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from coordinator.store import AlertRow, PostgresStore, SqliteStore, Store, StoreError
from tests.store.conftest import Backend, command, deployment, event, result
from tests.store.proxy import StallingProxy

# A generous guard against hanging, not a timing assertion: these calls must fail on
# their own store timeout, which is a fraction of this.
HANG_GUARD = 30.0


async def _engine_step(store: Store, *, fail: bool = False) -> None:
    """What the daemon persists for one engine step, commands saved before the snapshot."""
    async with store.transaction() as tx:
        assert await tx.save_command(command("cmd-1", payload=b"one", created=5.0))
        assert await tx.save_command(command("cmd-2", host="web-2", payload=b"two", created=5.0))
        await tx.append_event(event(5.0, "step", "deploying to 2 canaries", deployment="d-1"))
        await tx.save_deployment(deployment("d-1", "deploying", b"s"))
        if fail:
            raise ValueError("publish preparation failed")


async def test_a_transaction_commits_snapshot_commands_and_events_together(store: Store) -> None:
    await _engine_step(store)
    saved = await store.get_deployment("d-1")
    assert saved is not None
    assert saved.state == "deploying"
    assert [c.id for c in await store.commands("d-1")] == ["cmd-1", "cmd-2"]
    assert [e.message for e in await store.events()] == ["deploying to 2 canaries"]


async def test_a_failed_transaction_applies_nothing(store: Store) -> None:
    with pytest.raises(ValueError, match="publish preparation failed"):
        await _engine_step(store, fail=True)
    assert await store.get_deployment("d-1") is None
    assert await store.commands("d-1") == []
    assert await store.events() == []
    # And the store carries on normally.
    await _engine_step(store)
    assert [c.id for c in await store.commands("d-1")] == ["cmd-1", "cmd-2"]


async def test_reads_inside_a_transaction_see_its_writes(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.save_deployment(deployment("d-1", "verifying"))
        found = await tx.get_deployment("d-1")
        assert found is not None
        assert found.state == "verifying"


async def test_calling_the_store_inside_its_own_transaction_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="open transaction"):
        async with store.transaction() as tx:
            await tx.save_deployment(deployment("d-1", "x"))
            await store.events()
    assert await store.get_deployment("d-1") is None


async def test_other_tasks_wait_for_an_open_transaction(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.save_deployment(deployment("d-1", "x"))
        other = asyncio.create_task(
            store.write(lambda tx: tx.append_event(event(1.0, "note", "from another task")))
        )
        await asyncio.sleep(0)
        await tx.append_event(event(0.5, "note", "from the transaction"))
    await other
    assert sorted(e.message for e in await store.events()) == [
        "from another task",
        "from the transaction",
    ]


async def test_data_survives_close_and_reopen(backend: Backend) -> None:
    store = backend.make()
    async with store:
        await store.migrate()
        await _engine_step(store)
        await store.write(
            lambda tx: tx.record_command_result("cmd-1", result("succeeded", "ok", 6.0))
        )
        alert = AlertRow(
            key="cpu:web-2", host="web-2", rule="cpu", started=6.0, evidence={"values": [95.0]}
        )
        await store.write(lambda tx: tx.open_alert(alert))
        await store.write(lambda tx: tx.save_deployment(deployment("d-1", "baking", fencing=4)))
        before = (
            await store.get_deployment("d-1"),
            await store.commands("d-1"),
            await store.alerts(),
            await store.events(),
        )
    await store.close()  # closing twice is harmless

    if backend.name == "sqlite":
        assert _private(backend.target)

    reopened = backend.make()
    async with reopened:
        assert await reopened.migrate() == []
        after = (
            await reopened.get_deployment("d-1"),
            await reopened.commands("d-1"),
            await reopened.alerts(),
            await reopened.events(),
        )
        assert after == before
        assert [c.id for c in after[1] if not c.final] == ["cmd-2"]
        assert await reopened.current_fence() == 4
        # The sequence of events carries on where it stopped.
        note = event(7.0, "note", "after restart")
        assert await reopened.write(lambda tx: tx.append_event(note)) == after[3][-1].seq + 1


async def test_a_closed_store_raises_store_error(backend: Backend) -> None:
    store = backend.make()
    with pytest.raises(StoreError, match="not open"):
        await store.ping()
    async with store:
        await store.migrate()
        await store.ping()
    with pytest.raises(StoreError, match="not open"):
        await store.events()


async def test_a_locked_database_times_out_with_store_error(backend: Backend) -> None:
    setup = backend.make()
    async with setup:
        await setup.migrate()
    store = backend.make(timeout=0.5)
    async with store:
        with backend.write_lock_held():
            with pytest.raises(StoreError) as failed:
                await asyncio.wait_for(
                    store.write(lambda tx: tx.save_deployment(deployment("d-1", "x"))),
                    HANG_GUARD,
                )
            assert isinstance(failed.value.__cause__, sqlite3.Error | psycopg.Error | TimeoutError)
        # Once the lock is gone the same store works again and nothing half-done remains.
        await store.write(lambda tx: tx.save_deployment(deployment("d-1", "after")))
        saved = await store.get_deployment("d-1")
        assert saved is not None
        assert saved.state == "after"


def _private(path: str) -> bool:
    """The store file holds signed commands: no one but its owner may read it."""
    return Path(path).stat().st_mode & 0o077 == 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_database_raises_store_error(backend: Backend, tmp_path: Path) -> None:
    store: Store
    if backend.name == "sqlite":
        store = SqliteStore(tmp_path / "no-such-dir" / "rollguard.db", timeout=1.0)
    else:
        store = PostgresStore(f"postgresql://postgres@127.0.0.1:{_closed_port()}/x", 1.0)
    with pytest.raises(StoreError, match=r"rollguard\.db|unreachable"):
        await asyncio.wait_for(store.open(), HANG_GUARD)
    with pytest.raises(StoreError):
        await store.ping()
    await store.close()


async def test_a_postgres_password_never_appears_in_errors() -> None:
    url = f"postgresql://rollguard:s3cret-pw@127.0.0.1:{_closed_port()}/rollguard"
    store = PostgresStore(url, 1.0)
    with pytest.raises(StoreError) as failed:
        await asyncio.wait_for(store.open(), HANG_GUARD)
    assert "s3cret-pw" not in str(failed.value)
    assert "s3cret-pw" not in repr(store)


@pytest.fixture
async def stalling_pg(pg_url: str) -> AsyncIterator[tuple[StallingProxy, str]]:
    """A proxy in front of the test database and a URL that goes through it."""
    info = conninfo_to_dict(pg_url)
    proxy = StallingProxy(str(info.get("host", "127.0.0.1")), int(info.get("port") or 5432))
    await proxy.start()
    user = info.get("user", "postgres")
    try:
        yield proxy, f"postgresql://{user}@127.0.0.1:{proxy.port}/{info['dbname']}"
    finally:
        await proxy.close()


@pytest.mark.integration
async def test_a_silent_network_raises_store_error_and_the_store_recovers(
    stalling_pg: tuple[StallingProxy, str],
) -> None:
    proxy, url = stalling_pg
    async with PostgresStore(url, 1.0) as store:
        await store.migrate()
        await store.write(lambda tx: tx.save_deployment(deployment("d-1", "a")))
        proxy.stall()
        with pytest.raises(StoreError, match="no answer"):
            await asyncio.wait_for(
                store.write(lambda tx: tx.save_deployment(deployment("d-1", "b"))),
                HANG_GUARD,
            )
        with pytest.raises(StoreError):
            await asyncio.wait_for(store.ping(), HANG_GUARD)
        proxy.resume()
        # Back to normal without a restart; the write that timed out never committed.
        await asyncio.wait_for(store.ping(), HANG_GUARD)
        saved = await store.get_deployment("d-1")
        assert saved is not None
        assert saved.state == "a"


@pytest.mark.integration
async def test_a_cancelled_caller_leaks_no_connection(
    stalling_pg: tuple[StallingProxy, str],
) -> None:
    proxy, url = stalling_pg
    # One connection only: losing it would make every later call time out.
    async with PostgresStore(url, 1.0, max_size=1) as store:
        await store.migrate()
        proxy.stall()
        for _ in range(2):
            call = asyncio.create_task(
                store.write(lambda tx: tx.append_event(event(1.0, "note", "never stored")))
            )
            await asyncio.sleep(0.2)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        proxy.resume()
        for attempt in range(20):
            try:
                await asyncio.wait_for(store.ping(), HANG_GUARD)
                break
            except StoreError:
                # The clean-up of the cancelled calls may still hold the connection.
                if attempt == 19:
                    raise
        assert await store.events() == []
        assert await store.write(lambda tx: tx.append_event(event(2.0, "note", "stored"))) == 1
