"""A database written by the rollguard before the one store (schema version 2) migrates
forward: its rows stay readable and its in-flight deployment resumes.

The fixtures were written by that rollguard's own pipeline (a canary deployment of the
engine simulator, stored step by step until it baked), plus one row in each table it
never wrote, then dumped (sqlite3's iterdump; pg_dump --inserts). Nothing in them is
written by hand.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import psycopg
import pytest

from coordinator.engine import Engine, Tick
from coordinator.engine.state import (
    decode_deployment,
    decode_saved,
    encode_deployment,
    encode_saved,
    joined,
)
from coordinator.store import (
    LATEST_VERSION,
    DeploymentRow,
    EngineStateRow,
    Store,
)
from shared.messages import Command
from shared.phases import Phase
from tests.engine.sim import make_config
from tests.store.conftest import Backend

FIXTURES = Path(__file__).parent / "fixtures"


def _load_version_2(backend: Backend) -> None:
    script = (FIXTURES / f"v2_{backend.name}.sql").read_text()
    if backend.name == "sqlite":
        conn = sqlite3.connect(backend.target)
        try:
            conn.executescript(script)
        finally:
            conn.close()
    else:
        with psycopg.connect(backend.target, autocommit=True) as pg:
            pg.execute(script.encode())


def _columns(backend: Backend) -> set[tuple[str, str]]:
    if backend.name == "sqlite":
        tables = [
            name
            for (name,) in backend.rows(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sqlite_sequence'"
            )
        ]
        return {
            (table, str(row[1]))
            for table in tables
            for row in backend.rows(f"PRAGMA table_info({table})")
        }
    return {
        (str(table), str(column))
        for table, column in backend.rows(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        )
    }


async def _restore(store: Store) -> Engine:
    """What the daemon does on becoming active."""
    saved = await store.load_engine_state()
    assert saved is not None
    state = decode_saved(saved.snapshot)
    rows = [await store.get_deployment(d) for d in state.deployments]
    deployments = {r.id: decode_deployment(r.body) for r in rows if r is not None}
    return Engine.restore(make_config(), joined(state, deployments))


async def test_a_version_2_database_migrates_and_its_deployment_resumes(
    backend: Backend, tmp_path: Path
) -> None:
    _load_version_2(backend)
    store = backend.make()
    async with store:
        assert await store.schema_version() == 2
        assert await store.migrate() == list(range(3, LATEST_VERSION + 1))

        row = await store.get_deployment("d1")
        assert row is not None
        assert (row.environment, row.version, row.strategy, row.state) == (
            "production",
            "2.0.0",
            "canary",
            "baking",
        )
        assert decode_deployment(row.body).phase is Phase.BAKING

        commands = await store.commands("d1")
        assert [(c.state, c.final) for c in commands] == [("succeeded", True)]
        assert msgspec.json.decode(commands[0].payload, type=Command).deployment == "d1"
        events = await store.events()
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[0].kind == "deployment.created"
        [alert] = await store.alerts()
        assert (alert.key, alert.message, alert.resolved, alert.evidence["value"]) == (
            "cpu:web-2",
            "",
            None,
            97.0,
        )

        # The engine resumes from the old snapshot mid-bake, nothing re-sent.
        engine = await _restore(store)
        dep = engine.deployment("d1")
        assert dep is not None
        assert dep.phase is Phase.BAKING
        assert dep.bake.elapsed > 0
        assert not engine.outstanding()

        # Its next step is stored in today's form, from which it resumes again.
        engine.handle(Tick(), 2000.0)
        current = engine.deployment("d1")
        assert current is not None
        async with store.transaction() as tx:
            await tx.save_deployment(
                DeploymentRow(
                    id="d1",
                    environment="production",
                    version="2.0.0",
                    strategy="canary",
                    state=current.phase.value,
                    body=encode_deployment(current),
                    fencing=1,
                    created=current.created,
                    updated=current.updated,
                )
            )
            await tx.save_engine_state(
                EngineStateRow(snapshot=encode_saved(engine.saved()), time=2000.0, fencing=1)
            )
        again = (await _restore(store)).deployment("d1")
        assert again is not None
        assert again == current

    # The migrated schema is exactly the one a fresh database gets.
    fresh = Backend("sqlite", str(tmp_path / "fresh.db"))
    if backend.name == "postgres":
        return  # compared below on a database of its own
    async with fresh.make() as new:
        await new.migrate()
    assert _columns(backend) == _columns(fresh)


@pytest.mark.integration
async def test_migrated_and_fresh_postgres_schemas_match(pg_url: str) -> None:
    upgraded = Backend("postgres", pg_url)
    _load_version_2(upgraded)
    async with upgraded.make() as store:
        await store.migrate()
        columns = _columns(upgraded)
        # Start over in the same database: drop everything, migrate from nothing.
        with upgraded.raw() as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        await store.migrate()
    assert _columns(upgraded) == columns
    assert ("deployments", "body") in columns
    assert not {table for table, _ in columns} & {"steps", "hosts"}
