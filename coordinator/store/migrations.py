"""Versioned schema migrations, one list for both backends.

Each migration is a version, a name and its statements for each dialect. A migration
runs in its own transaction together with the row that records it in
``schema_migrations``, so it applies wholly or not at all. Never edit a released
migration: add the next version. Statements are kept as tuples rather than scripts
because sqlite3's ``executescript`` commits on its own, outside our transaction.

Schema notes that hold for both dialects:
- times are Unix seconds as floating point, as on the wire;
- evidence and labels are JSON text (jsonb on PostgreSQL), written with msgspec;
- ``events`` is append-only, enforced by triggers, so the audit trail of every decision
  cannot be rewritten through the store or by a careless ``UPDATE`` at a SQL prompt;
- foreign keys to ``deployments`` are deferred to commit, so one engine step may save
  its commands and its deployment snapshot in either order.
"""

from __future__ import annotations

from typing import Final

from msgspec import Struct

from coordinator.store.errors import StoreError


class Migration(Struct, frozen=True, kw_only=True):
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


# Key of the PostgreSQL advisory lock that serialises migrations across coordinators
# (an arbitrary constant: the ASCII of "rgmigr" as a 64-bit integer).
MIGRATION_LOCK_KEY: Final = 0x72676D696772

SQLITE_MIGRATIONS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied REAL NOT NULL
)"""

POSTGRES_MIGRATIONS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied double precision NOT NULL
)"""

_V1_SQLITE: Final = (
    """CREATE TABLE leader_fence (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        token INTEGER NOT NULL CHECK (token >= 0)
    )""",
    "INSERT INTO leader_fence (id, token) VALUES (1, 0)",
    """CREATE TABLE deployments (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        environment TEXT NOT NULL,
        version TEXT NOT NULL,
        strategy TEXT NOT NULL,
        state TEXT NOT NULL,
        snapshot BLOB NOT NULL,
        fencing INTEGER NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    )""",
    "CREATE INDEX deployments_state ON deployments (state)",
    "CREATE INDEX deployments_environment ON deployments (environment, seq)",
    """CREATE TABLE steps (
        deployment_id TEXT NOT NULL
            REFERENCES deployments (id) DEFERRABLE INITIALLY DEFERRED,
        step_index INTEGER NOT NULL CHECK (step_index >= 0),
        percent REAL NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        outcome TEXT,
        PRIMARY KEY (deployment_id, step_index)
    )""",
    """CREATE TABLE commands (
        id TEXT PRIMARY KEY,
        deployment_id TEXT NOT NULL
            REFERENCES deployments (id) DEFERRABLE INITIALLY DEFERRED,
        host TEXT NOT NULL,
        action TEXT NOT NULL,
        payload BLOB NOT NULL,
        created REAL NOT NULL,
        fencing INTEGER NOT NULL
    )""",
    "CREATE INDEX commands_deployment ON commands (deployment_id)",
    """CREATE TABLE command_results (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        command_id TEXT NOT NULL REFERENCES commands (id),
        state TEXT NOT NULL
            CHECK (state IN ('accepted', 'succeeded', 'failed', 'rejected')),
        detail TEXT NOT NULL,
        time REAL NOT NULL,
        UNIQUE (command_id, state)
    )""",
    """CREATE TABLE hosts (
        host TEXT PRIMARY KEY,
        online INTEGER NOT NULL,
        session INTEGER NOT NULL,
        environment TEXT NOT NULL,
        version TEXT,
        slot TEXT,
        labels TEXT NOT NULL,
        last_seen REAL NOT NULL
    )""",
    """CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        host TEXT,
        rule TEXT NOT NULL,
        started REAL NOT NULL,
        resolved REAL,
        evidence TEXT NOT NULL
    )""",
    # At most one active alert per key: what deduplicates alerts across restarts.
    "CREATE UNIQUE INDEX alerts_active_key ON alerts (key) WHERE resolved IS NULL",
    # AUTOINCREMENT: a seq is never reused, even after a rolled-back append.
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        deployment TEXT,
        host TEXT,
        actor TEXT,
        evidence TEXT NOT NULL
    )""",
    "CREATE INDEX events_deployment ON events (deployment, seq)",
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
)

_V1_POSTGRES: Final = (
    """CREATE TABLE leader_fence (
        id integer PRIMARY KEY CHECK (id = 1),
        token bigint NOT NULL CHECK (token >= 0)
    )""",
    "INSERT INTO leader_fence (id, token) VALUES (1, 0)",
    """CREATE TABLE deployments (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        environment text NOT NULL,
        version text NOT NULL,
        strategy text NOT NULL,
        state text NOT NULL,
        snapshot bytea NOT NULL,
        fencing bigint NOT NULL,
        created double precision NOT NULL,
        updated double precision NOT NULL
    )""",
    "CREATE INDEX deployments_state ON deployments (state)",
    "CREATE INDEX deployments_environment ON deployments (environment, seq)",
    """CREATE TABLE steps (
        deployment_id text NOT NULL
            REFERENCES deployments (id) DEFERRABLE INITIALLY DEFERRED,
        step_index integer NOT NULL CHECK (step_index >= 0),
        percent double precision NOT NULL,
        started double precision NOT NULL,
        ended double precision,
        outcome text,
        PRIMARY KEY (deployment_id, step_index)
    )""",
    """CREATE TABLE commands (
        id text PRIMARY KEY,
        deployment_id text NOT NULL
            REFERENCES deployments (id) DEFERRABLE INITIALLY DEFERRED,
        host text NOT NULL,
        action text NOT NULL,
        payload bytea NOT NULL,
        created double precision NOT NULL,
        fencing bigint NOT NULL
    )""",
    "CREATE INDEX commands_deployment ON commands (deployment_id)",
    """CREATE TABLE command_results (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        command_id text NOT NULL REFERENCES commands (id),
        state text NOT NULL
            CHECK (state IN ('accepted', 'succeeded', 'failed', 'rejected')),
        detail text NOT NULL,
        time double precision NOT NULL,
        UNIQUE (command_id, state)
    )""",
    """CREATE TABLE hosts (
        host text PRIMARY KEY,
        online boolean NOT NULL,
        session bigint NOT NULL,
        environment text NOT NULL,
        version text,
        slot text,
        labels jsonb NOT NULL,
        last_seen double precision NOT NULL
    )""",
    """CREATE TABLE alerts (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key text NOT NULL,
        host text,
        rule text NOT NULL,
        started double precision NOT NULL,
        resolved double precision,
        evidence jsonb NOT NULL
    )""",
    "CREATE UNIQUE INDEX alerts_active_key ON alerts (key) WHERE resolved IS NULL",
    # A sequence hands out numbers in call order but transactions commit in any order,
    # so a reader could see seq 11 before 10 commits and then skip 10 for good. A
    # one-row counter, locked by the append until commit, makes seq order commit order
    # (and gapless, since a rolled-back append rolls the counter back too).
    """CREATE TABLE event_counter (
        id integer PRIMARY KEY CHECK (id = 1),
        last_seq bigint NOT NULL
    )""",
    "INSERT INTO event_counter (id, last_seq) VALUES (1, 0)",
    """CREATE TABLE events (
        seq bigint PRIMARY KEY CHECK (seq > 0),
        time double precision NOT NULL,
        kind text NOT NULL,
        message text NOT NULL,
        deployment text,
        host text,
        actor text,
        evidence jsonb NOT NULL
    )""",
    "CREATE INDEX events_deployment ON events (deployment, seq)",
    """CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'events are append-only' USING ERRCODE = 'restrict_violation';
    END
    $$""",
    """CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only()""",
    """CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()""",
)

# The engine's resumable state (its snapshot) in one row, written with the deployment
# rows of the same step; the deployments table stays the queryable history.
_V2_SQLITE: Final = (
    """CREATE TABLE engine_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        snapshot BLOB NOT NULL,
        time REAL NOT NULL,
        fencing INTEGER NOT NULL
    )""",
)
_V2_POSTGRES: Final = (
    """CREATE TABLE engine_state (
        id integer PRIMARY KEY CHECK (id = 1),
        snapshot bytea NOT NULL,
        time double precision NOT NULL,
        fencing bigint NOT NULL
    )""",
)

MIGRATIONS: Final = (
    Migration(version=1, name="initial schema", sqlite=_V1_SQLITE, postgres=_V1_POSTGRES),
    Migration(version=2, name="engine state", sqlite=_V2_SQLITE, postgres=_V2_POSTGRES),
)

LATEST_VERSION: Final = MIGRATIONS[-1].version


def check_applied(applied: dict[int, str]) -> list[Migration]:
    """The migrations still to apply, in order, given ``{version: name}`` already applied.

    Refuses a database that a newer rollguard migrated (its schema may not mean what this
    code thinks) and one whose recorded names disagree with ours (a hand-edited history).
    """
    known = {migration.version: migration for migration in MIGRATIONS}
    newer = sorted(version for version in applied if version not in known)
    if newer:
        raise StoreError(
            f"database schema version {newer[-1]} is newer than this rollguard "
            f"(which knows up to {LATEST_VERSION}); upgrade rollguard"
        )
    for version, name in applied.items():
        if known[version].name != name:
            raise StoreError(
                f"schema_migrations records version {version} as {name!r}, "
                f"but this rollguard's version {version} is {known[version].name!r}"
            )
    return [migration for migration in MIGRATIONS if migration.version not in applied]
