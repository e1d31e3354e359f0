"""The TCP connect check: an open port, a closed port, a connect that hangs."""

from __future__ import annotations

from agent.checks.network import NetworkCheck
from tests.agent.conftest import App, RecordingSink


async def test_all_endpoints_reachable(sink: RecordingSink, app: App) -> None:
    endpoint = f"127.0.0.1:{app.port}"
    await NetworkCheck(interval=30, timeout=5, endpoints=[endpoint]).collect(sink)
    sample = sink.only("network")
    assert sample.ok and sample.error is None
    assert sample.values["endpoints"] == 1 and sample.values["failed"] == 0
    assert sample.values["latency_ms"] == sample.values[f"latency_ms:{endpoint}"] >= 0


async def test_closed_port_fails_naming_the_endpoint(
    sink: RecordingSink, app: App, closed_port: int
) -> None:
    good, bad = f"127.0.0.1:{app.port}", f"127.0.0.1:{closed_port}"
    await NetworkCheck(interval=30, timeout=5, endpoints=[good, bad]).collect(sink)
    sample = sink.only("network")
    assert sample.ok is False
    assert sample.error == f"{bad}: connection refused"
    assert sample.values["failed"] == 1 and sample.values["endpoints"] == 2
    assert f"latency_ms:{good}" in sample.values and f"latency_ms:{bad}" not in sample.values


async def test_connect_that_never_completes_times_out(
    sink: RecordingSink, unaccepting_port: int
) -> None:
    endpoint = f"127.0.0.1:{unaccepting_port}"
    await NetworkCheck(interval=1, timeout=0.5, endpoints=[endpoint]).collect(sink)
    sample = sink.only("network")
    assert sample.ok is False
    assert sample.error == f"{endpoint}: timed out after 0.45s"
    assert "latency_ms" not in sample.values


async def test_unresolvable_host_is_named(sink: RecordingSink) -> None:
    await NetworkCheck(interval=30, timeout=5, endpoints=["no-such-host.invalid:80"]).collect(sink)
    sample = sink.only("network")
    assert sample.ok is False
    assert sample.error is not None and sample.error.startswith("no-such-host.invalid:80: ")
