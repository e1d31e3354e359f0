"""``SELECT 1`` against a real PostgreSQL; a refused port; a server that never answers."""

from __future__ import annotations

import pytest

from agent.checks.database import DatabaseCheck
from tests.agent.conftest import RecordingSink

pytestmark = pytest.mark.integration


async def test_select_1_succeeds_with_latency(sink: RecordingSink, pg_url: str) -> None:
    await DatabaseCheck(interval=30, timeout=5, url=pg_url).collect(sink)
    sample = sink.only("database")
    assert sample.ok and sample.error is None
    assert set(sample.values) == {"latency_ms", "connect_ms", "query_ms"}
    assert sample.values["latency_ms"] >= sample.values["query_ms"] > 0


async def test_missing_database_is_an_error_sample(sink: RecordingSink, pg_url: str) -> None:
    url = pg_url.rsplit("/", 1)[0] + "/rollguard_no_such_database"
    await DatabaseCheck(interval=30, timeout=5, url=url).collect(sink)
    sample = sink.only("database")
    assert sample.ok is False
    assert sample.error is not None and 'database "rollguard_no_such_database" does not exist' in (
        sample.error
    )
    assert sample.values == {}


async def test_refused_connection(sink: RecordingSink, closed_port: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port}/postgres"
    await DatabaseCheck(interval=30, timeout=5, url=url).collect(sink)
    sample = sink.only("database")
    assert sample.ok is False
    assert sample.error is not None and "refused" in sample.error.lower()


async def test_server_that_never_answers_times_out(sink: RecordingSink, silent_port: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{silent_port}/postgres"
    await DatabaseCheck(interval=2, timeout=1, url=url).collect(sink)
    sample = sink.only("database")
    assert sample.ok is False
    assert sample.error == "connect timed out after 0.9s"
