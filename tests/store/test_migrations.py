"""Versioned migrations: in order, recorded, idempotent, atomic, safe to run twice at once."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.store import LATEST_VERSION, MIGRATIONS, StoreError, schema
from coordinator.store.schema import Migration, Only
from tests.store.conftest import Backend


async def test_migrate_applies_every_version_once(backend: Backend) -> None:
    store = backend.make()
    async with store:
        assert await store.schema_version() == 0
        assert await store.migrate() == [m.version for m in MIGRATIONS]
        assert await store.schema_version() == LATEST_VERSION
        # Idempotent: a second run (every coordinator start) applies nothing.
        assert await store.migrate() == []
    recorded = backend.rows("SELECT version, name FROM schema_migrations ORDER BY version")
    assert recorded == [(m.version, m.name) for m in MIGRATIONS]
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))


async def test_two_coordinators_migrating_at_once(backend: Backend) -> None:
    first, second = backend.make(), backend.make()
    async with first, second:
        applied = await asyncio.gather(first.migrate(), second.migrate())
    # Between them every migration ran exactly once.
    assert sorted(applied[0] + applied[1]) == [m.version for m in MIGRATIONS]
    assert backend.rows("SELECT count(*) FROM schema_migrations") == [(len(MIGRATIONS),)]


async def test_database_from_a_newer_rollguard_is_refused(backend: Backend) -> None:
    store = backend.make()
    async with store:
        await store.migrate()
        with backend.raw() as conn:
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied) "
                f"VALUES ({LATEST_VERSION + 1}, 'from the future', 0)"
            )
        with pytest.raises(StoreError, match="newer than this rollguard"):
            await store.migrate()


async def test_a_renamed_migration_is_refused(backend: Backend) -> None:
    store = backend.make()
    async with store:
        await store.migrate()
        with backend.raw() as conn:
            conn.execute("UPDATE schema_migrations SET name = 'edited' WHERE version = 1")
        with pytest.raises(StoreError, match="'edited'"):
            await store.migrate()


async def test_a_failing_migration_applies_nothing(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.make()
    async with store:
        await store.migrate()
        broken = Migration(
            version=LATEST_VERSION + 1,
            name="half good",
            statements=(
                "CREATE TABLE half (x integer)",
                Only("postgres", "THIS IS NOT SQL"),
                Only("sqlite", "NOR IS THIS"),
            ),
        )
        monkeypatch.setattr(schema, "MIGRATIONS", (*MIGRATIONS, broken))
        with pytest.raises(StoreError):
            await store.migrate()
        assert await store.schema_version() == LATEST_VERSION
        # The good first statement of the broken migration was rolled back with it.
        if backend.name == "sqlite":
            assert backend.rows("SELECT name FROM sqlite_master WHERE name = 'half'") == []
        else:
            assert backend.rows("SELECT to_regclass('half')") == [(None,)]
        # The store is still usable afterwards.
        await store.ping()
