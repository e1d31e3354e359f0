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

from coordinator.store import PostgresStore, SqliteStore, Store, StoreError
from tests.store.conftest import Backend
from tests.store.proxy import StallingProxy

# A generous guard against hanging, not a timing assertion: these calls must fail on
# their own store timeout, which is a fraction of this.
HANG_GUARD = 30.0


async def _engine_step(store: Store, *, fail: bool = False) -> None:
    """What the daemon persists for one engine step, commands saved before the snapshot."""
    async with store.transaction() as tx:
        assert await tx.save_command("cmd-1", "d-1", "web-1", "deploy", b"one", 5.0, fencing=0)
        assert await tx.save_command("cmd-2", "d-1", "web-2", "deploy", b"two", 5.0, fencing=0)
        await tx.append_event(5.0, "step", "deploying to 2 canaries", deployment="d-1")
        await tx.save_deployment("d-1", "production", "2.0", "canary", "deploying", b"s", fencing=0)
        if fail:
            raise ValueError("publish preparation failed")


async def test_a_transaction_commits_snapshot_commands_and_events_together(store: Store) -> None:
    await _engine_step(store)
    deployment = await store.get_deployment("d-1")
    assert deployment is not None
    assert deployment.state == "deploying"
    assert [c.id for c in await store.pending_commands()] == ["cmd-1", "cmd-2"]
    assert [e.message for e in await store.events()] == ["deploying to 2 canaries"]


async def test_a_failed_transaction_applies_nothing(store: Store) -> None:
    with pytest.raises(ValueError, match="publish preparation failed"):
        await _engine_step(store, fail=True)
    assert await store.get_deployment("d-1") is None
    assert await store.pending_commands() == []
    assert await store.events() == []
    # And the store carries on normally.
    await _engine_step(store)
    assert [c.id for c in await store.pending_commands()] == ["cmd-1", "cmd-2"]


async def test_reads_inside_a_transaction_see_its_writes(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.save_deployment("d-1", "staging", "1", "direct", "verifying", b"", fencing=0)
        found = await tx.get_deployment("d-1")
        assert found is not None
        assert found.state == "verifying"


async def test_calling_the_store_inside_its_own_transaction_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="open transaction"):
        async with store.transaction() as tx:
            await tx.save_deployment("d-1", "staging", "1", "direct", "x", b"", fencing=0)
            await store.append_event(1.0, "note", "outside the transaction")
    assert await store.get_deployment("d-1") is None


async def test_other_tasks_wait_for_an_open_transaction(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.save_deployment("d-1", "staging", "1", "direct", "x", b"", fencing=0)
        other = asyncio.create_task(store.append_event(1.0, "note", "from another task"))
        await asyncio.sleep(0)
        await tx.append_event(0.5, "note", "from the transaction")
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
        await store.record_step("d-1", 0, 10.0, 5.0)
        await store.record_command_result("cmd-1", "succeeded", "ok", 6.0)
        await store.upsert_host("web-1", True, 3, "production", "2.0", None, {"zone": "a"}, 6.0)
        await store.open_alert("cpu:web-2", "web-2", "cpu", 6.0, {"values": [95.0]})
        await store.save_deployment(
            "d-1", "production", "2.0", "canary", "baking", b"s2", fencing=4
        )
        before = (
            await store.get_deployment("d-1"),
            await store.steps("d-1"),
            await store.commands("d-1"),
            await store.pending_commands(),
            await store.list_hosts(),
            await store.active_alerts(),
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
            await reopened.steps("d-1"),
            await reopened.commands("d-1"),
            await reopened.pending_commands(),
            await reopened.list_hosts(),
            await reopened.active_alerts(),
            await reopened.events(),
        )
        assert after == before
        assert [c.id for c in after[3]] == ["cmd-2"]
        assert await reopened.current_fence() == 4
        # The sequence of events carries on where it stopped.
        assert await reopened.append_event(7.0, "note", "after restart") == after[6][-1].seq + 1


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
                    store.save_deployment("d-1", "staging", "1", "direct", "x", b"", fencing=0),
                    HANG_GUARD,
                )
            assert isinstance(failed.value.__cause__, sqlite3.Error | psycopg.Error | TimeoutError)
        # Once the lock is gone the same store works again and nothing half-done remains.
        await store.save_deployment("d-1", "staging", "1", "direct", "after", b"", fencing=0)
        deployment = await store.get_deployment("d-1")
        assert deployment is not None
        assert deployment.state == "after"


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
        await store.save_deployment("d-1", "staging", "1", "direct", "a", b"", fencing=0)
        proxy.stall()
        with pytest.raises(StoreError, match="no answer"):
            await asyncio.wait_for(
                store.save_deployment("d-1", "staging", "1", "direct", "b", b"", fencing=0),
                HANG_GUARD,
            )
        with pytest.raises(StoreError):
            await asyncio.wait_for(store.ping(), HANG_GUARD)
        proxy.resume()
        # Back to normal without a restart; the write that timed out never committed.
        await asyncio.wait_for(store.ping(), HANG_GUARD)
        deployment = await store.get_deployment("d-1")
        assert deployment is not None
        assert deployment.state == "a"


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
            call = asyncio.create_task(store.append_event(1.0, "note", "never stored"))
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
        assert await store.append_event(2.0, "note", "stored") == 1
