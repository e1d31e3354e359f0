"""The application probe and the Prometheus scrape against a local aiohttp app."""

from __future__ import annotations

import pytest

from agent import httpclient
from agent.checks.application import ApplicationCheck
from shared.config.agent import ApplicationCheck as ApplicationConfig
from tests.agent.conftest import App, RecordingSink


def check(url: str, **extra: object) -> ApplicationCheck:
    import msgspec

    return ApplicationCheck(msgspec.convert({"url": url, **extra}, ApplicationConfig))


async def test_healthy_app_counts_requests_and_latencies(sink: RecordingSink, app: App) -> None:
    await check(app.url(), requests=5).collect(sink)
    sample = sink.only("application")
    assert sample.ok and sample.error is None
    assert (sample.values["requests"], sample.values["errors"]) == (5, 0)
    assert sample.values["error_rate"] == 0 and sample.values["responses"] == 5
    assert len(sample.latencies_ms) == 5 and sample.latencies_ms == sorted(sample.latencies_ms)
    assert sample.values["p50_ms"] == sample.latencies_ms[2]
    assert sample.values["p95_ms"] == sample.values["p99_ms"] == sample.latencies_ms[4]
    assert app.hits == 5


async def test_injected_errors_are_counts_not_just_a_rate(sink: RecordingSink, app: App) -> None:
    app.statuses = [500, 503]
    await check(app.url(), requests=5).collect(sink)
    sample = sink.only("application")
    # Reachable, so ok; the two failures travel as counts for the coordinator to weigh.
    assert sample.ok is True
    assert (sample.values["requests"], sample.values["errors"]) == (5, 2)
    assert sample.values["error_rate"] == pytest.approx(0.4)
    assert sample.values["responses"] == 5  # a 500 is a response, with a latency
    assert sample.error is not None and sample.error.startswith("2 of 5 probes failed: ")
    assert "HTTP 500" in sample.error and "HTTP 503" in sample.error


async def test_every_probe_failing_is_not_ok(sink: RecordingSink, app: App) -> None:
    app.statuses = [500] * 3
    await check(app.url(), requests=3).collect(sink)
    sample = sink.only("application")
    assert sample.ok is False
    assert sample.error == "3 of 3 probes failed: HTTP 500 x3"


async def test_injected_latency_shows_in_the_quantiles(sink: RecordingSink, app: App) -> None:
    app.delay = 0.2
    await check(app.url(), requests=3).collect(sink)
    sample = sink.only("application")
    assert sample.ok
    assert min(sample.latencies_ms) >= 200
    assert sample.values["p50_ms"] >= 200 and sample.values["latency_ms"] >= 200


async def test_closed_port_fails_every_probe(sink: RecordingSink, closed_port: int) -> None:
    await check(f"http://127.0.0.1:{closed_port}/health", requests=2).collect(sink)
    sample = sink.only("application")
    assert sample.ok is False
    assert sample.error == "2 of 2 probes failed: connection refused x2"
    assert sample.values == {"requests": 2, "errors": 2, "error_rate": 1.0, "responses": 0}
    assert sample.latencies_ms == []


async def test_app_that_never_answers_times_out(sink: RecordingSink, silent_port: int) -> None:
    await check(f"http://127.0.0.1:{silent_port}/", requests=2, interval=1, timeout=0.5).collect(
        sink
    )
    sample = sink.only("application")
    assert sample.ok is False
    assert sample.error == "2 of 2 probes failed: timed out after 0.45s x2"


METRICS = """# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{{method="GET",code="200"}} {ok}
http_requests_total{{method="POST",code="500"}} {err}
http_requests_total{{method="GET",code="404"}} {notfound}
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{{le="0.1"}} {b1}
http_request_duration_seconds_bucket{{le="0.5"}} {b2}
http_request_duration_seconds_bucket{{le="+Inf"}} {b3}
http_request_duration_seconds_sum 1.0
http_request_duration_seconds_count {b3}
"""


async def test_scrape_turns_counters_into_this_intervals_counts(
    sink: RecordingSink, app: App
) -> None:
    probe = check(app.url(), requests=1, metrics_url=app.url("/metrics"))
    app.metrics = METRICS.format(ok=100, err=2, notfound=1, b1=90, b2=100, b3=103)
    await probe.collect(sink)
    first = sink.samples[-1]
    assert first.ok and "traffic_requests" not in first.values and first.histogram is None

    app.metrics = METRICS.format(ok=190, err=12, notfound=1, b1=160, b2=190, b3=203)
    await probe.collect(sink)
    second = sink.samples[-1]
    assert second.ok
    assert second.values["traffic_requests"] == 100
    assert second.values["traffic_errors"] == 10
    assert second.values["traffic_client_errors"] == 0
    assert second.values["traffic_error_rate"] == pytest.approx(0.1)
    assert second.histogram is not None
    assert second.histogram.bounds == [100.0, 500.0]
    assert second.histogram.counts == [70, 20, 10]


async def test_scrape_after_an_app_restart_counts_from_zero(sink: RecordingSink, app: App) -> None:
    probe = check(app.url(), requests=1, metrics_url=app.url("/metrics"))
    app.metrics = METRICS.format(ok=1000, err=50, notfound=0, b1=900, b2=1000, b3=1050)
    await probe.collect(sink)
    app.metrics = METRICS.format(ok=8, err=2, notfound=0, b1=6, b2=9, b3=10)
    await probe.collect(sink)
    sample = sink.samples[-1]
    assert (sample.values["traffic_requests"], sample.values["traffic_errors"]) == (10, 2)
    assert sample.histogram is not None and sample.histogram.counts == [6, 3, 1]


async def test_scrape_failure_is_reported_with_the_probes(sink: RecordingSink, app: App) -> None:
    probe = check(app.url(), requests=2, metrics_url=app.url("/nope"))
    await probe.collect(sink)
    sample = sink.only("application")
    assert sample.ok is False
    assert sample.error == "metrics scrape: HTTP 404"
    assert sample.values["requests"] == 2 and sample.values["errors"] == 0


async def test_http_client_reads_chunked_and_length_bodies(app: App) -> None:
    chunked = await httpclient.get(httpclient.target(app.url("/chunked")), max_body=1024)
    assert chunked == httpclient.Response(200, b"hello chunked world")
    plain = await httpclient.get(httpclient.target(app.url()), max_body=1024)
    assert plain == httpclient.Response(200, b"ok")
    capped = await httpclient.get(httpclient.target(app.url("/chunked")), max_body=8)
    assert capped.body == b"hello ch"


async def test_http_client_refuses_a_non_http_peer(silent_port: int) -> None:
    import asyncio

    async def garbage(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(httpclient.HttpError, match=r"not an HTTP/1\.x status line"):
            await httpclient.get(httpclient.target(f"http://127.0.0.1:{port}/"), max_body=10)
    finally:
        server.close()
