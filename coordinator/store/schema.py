"""The schema: versioned migrations, written once for both databases.

Each migration is a version, a name and its statements. A statement is portable SQL in
which the few types that differ are named in braces and filled in per dialect
(``{serial}``, ``{float}``, ``{blob}``, ``{json}``, ``{bigint}``, ``{bool}``); what
only one database has (the event counter, trigger syntax) is a statement for that
dialect alone. A migration runs in its own transaction together with the row that
records it in ``schema_migrations``, so it applies wholly or not at all. Never edit a
released migration: add the next version. (Rendering the braces reproduces exactly the
DDL that version 1 and 2 were released with.)

The schema as of the latest version:
- ``leader_fence``: one row, the highest fencing token seen (see store.py);
- ``deployments``: the engine's Deployment per row, with the columns filtered on;
- ``engine_state``: one row, the rest of the engine's snapshot;
- ``commands`` and ``command_results``: what was sent, signed, and every answer;
- ``alerts``: fired by the engine, resolved by it; one active per key;
- ``events``: the append-only log of every decision with its evidence, enforced by
  triggers, so the audit trail cannot be rewritten through the store or at a SQL prompt.
Times are Unix seconds as floating point, as on the wire; foreign keys to deployments
are deferred to commit, so one engine step may save its rows in any order.
"""

from __future__ import annotations

from typing import Final, Literal

from msgspec import Struct

from coordinator.store.errors import StoreError

DialectName = Literal["sqlite", "postgres"]

# The types that differ, by dialect.
TYPES: Final[dict[DialectName, dict[str, str]]] = {
    "sqlite": {
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "float": "REAL",
        "blob": "BLOB",
        "json": "TEXT",
        "bigint": "INTEGER",
        "bool": "INTEGER",
    },
    "postgres": {
        "serial": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "float": "double precision",
        "blob": "bytea",
        "json": "jsonb",
        "bigint": "bigint",
        "bool": "boolean",
    },
}


class Only(Struct, frozen=True):
    """A statement for one dialect only."""

    dialect: DialectName
    sql: str


Statement = str | Only


class Migration(Struct, frozen=True, kw_only=True):
    version: int
    name: str
    statements: tuple[Statement, ...]

    def render(self, dialect: DialectName) -> list[str]:
        """The statements to run on ``dialect``, types filled in."""
        out = []
        for statement in self.statements:
            if isinstance(statement, Only):
                if statement.dialect == dialect:
                    out.append(statement.sql)
            else:
                out.append(statement.format_map(TYPES[dialect]))
        return out


MIGRATIONS_TABLE: Final = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied {float} NOT NULL
)"""

_APPEND_ONLY = "events are append-only"

_V1: Final[tuple[Statement, ...]] = (
    """CREATE TABLE leader_fence (
        id integer PRIMARY KEY CHECK (id = 1),
        token {bigint} NOT NULL CHECK (token >= 0)
    )""",
    "INSERT INTO leader_fence (id, token) VALUES (1, 0)",
    """CREATE TABLE deployments (
        seq {serial},
        id text NOT NULL UNIQUE,
        environment text NOT NULL,
        version text NOT NULL,
        strategy text NOT NULL,
        state text NOT NULL,
        snapshot {blob} NOT NULL,
        fencing {bigint} NOT NULL,
        created {float} NOT NULL,
        updated {float} NOT NULL
    )""",
    "CREATE INDEX deployments_state ON deployments (state)",
    "CREATE INDEX deployments_environment ON deployments (environment, seq)",
    """CREATE TABLE steps (
        deployment_id text NOT NULL
            REFERENCES deployments (id) DEFERRABLE INITIALLY DEFERRED,
        step_index integer NOT NULL CHECK (step_index >= 0),
        percent {float} NOT NULL,
        started {float} NOT NULL,
        ended {float},
        outcome text,
        PRIMARY KEY (deployment_id, step_index)
    )""",
    """CREATE TABLE commands (
        id text PRIMARY KEY,
        deployment_id text NOT NULL
            REFERENCES deployments (id) DEFERRABLE INITIALLY DEFERRED,
        host text NOT NULL,
        action text NOT NULL,
        payload {blob} NOT NULL,
        created {float} NOT NULL,
        fencing {bigint} NOT NULL
    )""",
    "CREATE INDEX commands_deployment ON commands (deployment_id)",
    """CREATE TABLE command_results (
        id {serial},
        command_id text NOT NULL REFERENCES commands (id),
        state text NOT NULL
            CHECK (state IN ('accepted', 'succeeded', 'failed', 'rejected')),
        detail text NOT NULL,
        time {float} NOT NULL,
        UNIQUE (command_id, state)
    )""",
    """CREATE TABLE hosts (
        host text PRIMARY KEY,
        online {bool} NOT NULL,
        session {bigint} NOT NULL,
        environment text NOT NULL,
        version text,
        slot text,
        labels {json} NOT NULL,
        last_seen {float} NOT NULL
    )""",
    """CREATE TABLE alerts (
        id {serial},
        key text NOT NULL,
        host text,
        rule text NOT NULL,
        started {float} NOT NULL,
        resolved {float},
        evidence {json} NOT NULL
    )""",
    # At most one active alert per key: what deduplicates alerts across restarts.
    "CREATE UNIQUE INDEX alerts_active_key ON alerts (key) WHERE resolved IS NULL",
    # SQLite: AUTOINCREMENT never reuses a seq, and its single writer commits in order.
    Only(
        "sqlite",
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
    ),
    # PostgreSQL: a sequence hands out numbers in call order but transactions commit in
    # any order, so a reader could see seq 11 before 10 commits and then skip 10 for
    # good. A one-row counter, locked by the append until commit, makes seq order commit
    # order (and gapless, since a rolled-back append rolls the counter back too).
    Only(
        "postgres",
        """CREATE TABLE event_counter (
        id integer PRIMARY KEY CHECK (id = 1),
        last_seq bigint NOT NULL
    )""",
    ),
    Only("postgres", "INSERT INTO event_counter (id, last_seq) VALUES (1, 0)"),
    Only(
        "postgres",
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
    ),
    "CREATE INDEX events_deployment ON events (deployment, seq)",
    Only(
        "sqlite",
        f"""CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END""",
    ),
    Only(
        "sqlite",
        f"""CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END""",
    ),
    Only(
        "postgres",
        f"""CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{_APPEND_ONLY}' USING ERRCODE = 'restrict_violation';
    END
    $$""",
    ),
    Only(
        "postgres",
        """CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only()""",
    ),
    Only(
        "postgres",
        """CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()""",
    ),
)

_V2: Final[tuple[Statement, ...]] = (
    """CREATE TABLE engine_state (
        id integer PRIMARY KEY CHECK (id = 1),
        snapshot {blob} NOT NULL,
        time {float} NOT NULL,
        fencing {bigint} NOT NULL
    )""",
)

# One store: a deployment lives once, in its row (``body``, the engine's Deployment as
# JSON; rows written before hold msgpack, which the engine's codec still reads), and the
# engine snapshot names it by id. Steps and hosts were never written: steps are in the
# deployment's body and its events, hosts in the broker's retained statuses. Alerts
# keep the engine's message.
_V3: Final[tuple[Statement, ...]] = (
    "ALTER TABLE deployments RENAME COLUMN snapshot TO body",
    "DROP TABLE steps",
    "DROP TABLE hosts",
    "ALTER TABLE alerts ADD COLUMN message text NOT NULL DEFAULT ''",
    "CREATE INDEX alerts_started ON alerts (started)",
)

MIGRATIONS: Final = (
    Migration(version=1, name="initial schema", statements=_V1),
    Migration(version=2, name="engine state", statements=_V2),
    Migration(version=3, name="one store", statements=_V3),
)

LATEST_VERSION: Final = MIGRATIONS[-1].version


def pending(applied: dict[int, str], migrations: tuple[Migration, ...]) -> list[Migration]:
    """The migrations still to apply, in order, given ``{version: name}`` already applied.

    Refuses a database that a newer rollguard migrated (its schema may not mean what this
    code thinks) and one whose recorded names disagree with ours (a hand-edited history).
    """
    known = {migration.version: migration for migration in migrations}
    newer = sorted(version for version in applied if version not in known)
    if newer:
        raise StoreError(
            f"database schema version {newer[-1]} is newer than this rollguard "
            f"(which knows up to {migrations[-1].version}); upgrade rollguard"
        )
    for version, name in applied.items():
        if known[version].name != name:
            raise StoreError(
                f"schema_migrations records version {version} as {name!r}, "
                f"but this rollguard's version {version} is {known[version].name!r}"
            )
    return [migration for migration in migrations if migration.version not in applied]
