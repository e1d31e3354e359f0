"""The notifier against a real local HTTP receiver: payload shapes, retries, give-up,
dedupe, per-environment routing, Idempotency-Key, never blocking the caller."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from coordinator.daemon.notify import (
    Notification,
    Notifier,
    RetryPolicy,
    headline,
    parse_retry_after,
    targets_from_config,
)
from shared.config.coordinator import Environments, ProductionPolicy, Webhook
from shared.kinds import NotifyKind

FAST = RetryPolicy(attempts=4, base=0.02, cap=0.1, retry_after_cap=0.5)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Behaviour:
    fail_first: int = 0
    status: int = 500
    retry_after: str | None = None
    hang_first: int = 0


@dataclass
class Receiver:
    """Records every request; per path it can fail the first N or hang the first N."""

    base: str = ""
    requests: list[Received] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        n = self.seen.get(path, 0) + 1
        self.seen[path] = n
        behaviour = self.behaviours.get(path, Behaviour())
        if n <= behaviour.hang_first:
            # Until the test ends: the client's timeout must cut this short.
            await self.release.wait()
            return web.Response(status=200)
        raw = await request.read()
        async with self.arrived:
            self.requests.append(Received(path, dict(request.headers), json.loads(raw)))
            self.arrived.notify_all()
        if n <= behaviour.fail_first:
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            return web.Response(status=behaviour.status, headers=headers, text="nope")
        return web.Response(status=200, text="ok")

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within), self.arrived:
            await self.arrived.wait_for(lambda: len(self.requests) >= count)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recv.base = f"http://127.0.0.1:{port}"
    try:
        yield recv
    finally:
        recv.release.set()
        await runner.cleanup()


def rolled_back(**overrides: Any) -> Notification:
    fields: dict[str, Any] = {
        "kind": "rolled_back",
        "environment": "production",
        "deployment": "dep-42",
        "version": "2.4.1",
        "message": "error rate 3.2% > 1% (Wilson lower bound 2.1%)",
        "evidence": {
            "rule": "error_rate",
            "error_rate": 0.032,
            "threshold": 0.01,
            "lower_bound": 0.021,
            "requests": 5000,
            "window": "5m",
        },
        "time": 1_700_000_000.0,
    }
    fields.update(overrides)
    return Notification(**fields)


def hook(receiver: Receiver, path: str, fmt: str = "json", timeout: float = 2.0) -> Webhook:
    return Webhook(url=receiver.url(path), format=fmt, timeout=timeout)  # type: ignore[arg-type]


def test_headline_reads_like_the_guide() -> None:
    assert headline(rolled_back()) == (
        ":rotating_light: production: 2.4.1 rolled back — "
        "error rate 3.2% > 1% (Wilson lower bound 2.1%)"
    )
    alert = Notification(
        kind=NotifyKind.ALERT_FIRED,
        environment="staging",
        host="web-1",
        message="cpu 93% > 80% for 3 samples",
        time=0.0,
        key="web-1/cpu",
    )
    assert headline(alert) == ":warning: staging: web-1 alert fired — cpu 93% > 80% for 3 samples"
    started = Notification(
        kind=NotifyKind.DEPLOYMENT_STARTED, environment="staging", deployment="d1", time=0.0
    )
    assert headline(started) == ":rocket: staging: deployment d1 deployment started"


def test_retry_after_parsing_and_backoff() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    policy = RetryPolicy(attempts=9, base=1.0, cap=8.0, retry_after_cap=60.0)
    assert policy.delay(1, retry_after=120.0) == 60.0
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (8, 8.0)]:
        for _ in range(50):
            assert ceiling / 2 <= policy.delay(attempt) <= ceiling


def test_idempotency_key_is_stable_and_distinguishes_changes() -> None:
    a = rolled_back()
    assert a.idempotency_key == rolled_back(message="other words", time=5.0).idempotency_key
    assert a.idempotency_key != rolled_back(deployment="dep-43").idempotency_key
    assert a.idempotency_key != rolled_back(kind="completed").idempotency_key
    step1 = rolled_back(kind="step_promoted", key="step-1")
    assert step1.idempotency_key != rolled_back(kind="step_promoted", key="step-2").idempotency_key
    assert a.idempotency_key.startswith("rollguard-")
    assert len(a.idempotency_key) < 64


def test_targets_from_config() -> None:
    hooks = [Webhook(url="http://example.invalid/x", format="slack")]
    envs = Environments(production=ProductionPolicy(webhooks=hooks))
    assert targets_from_config(envs) == {"development": [], "staging": [], "production": hooks}


async def test_payload_shapes_for_both_formats(receiver: Receiver) -> None:
    targets = {"production": [hook(receiver, "/slack", "slack"), hook(receiver, "/json")]}
    async with Notifier(targets, retry=FAST) as notifier:
        assert notifier.notify(rolled_back())
        await receiver.wait_for(2)

    [slack] = receiver.at("/slack")
    body = slack.body
    # Slack wants &, < and > escaped in every text it renders.
    assert body["text"] == (
        ":rotating_light: production: 2.4.1 rolled back — "
        "error rate 3.2% &gt; 1% (Wilson lower bound 2.1%)"
    )
    first, fields, context = body["blocks"]
    assert first == {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": ":rotating_light: production: 2.4.1 rolled back — "
            "error rate 3.2% &gt; 1% (Wilson lower bound 2.1%)",
        },
    }
    assert fields["type"] == "section"
    assert [f["text"] for f in fields["fields"]] == [
        "*rule*\nerror_rate",
        "*error_rate*\n0.032",
        "*threshold*\n0.01",
        "*lower_bound*\n0.021",
        "*requests*\n5000",
        "*window*\n5m",
    ]
    assert context["type"] == "context"
    assert context["elements"][0]["text"] == (
        "deployment `dep-42` · version `2.4.1` · 2023-11-14 22:13:20 UTC"
    )
    assert slack.headers["Content-Type"] == "application/json"

    [generic] = receiver.at("/json")
    assert generic.body == {
        "kind": "rolled_back",
        "environment": "production",
        "deployment": "dep-42",
        "host": None,
        "version": "2.4.1",
        "message": "error rate 3.2% > 1% (Wilson lower bound 2.1%)",
        "evidence": {
            "rule": "error_rate",
            "error_rate": 0.032,
            "threshold": 0.01,
            "lower_bound": 0.021,
            "requests": 5000,
            "window": "5m",
        },
        "time": 1_700_000_000.0,
        "key": "",
        "link": None,
    }
    key = rolled_back().idempotency_key
    assert slack.headers["Idempotency-Key"] == key
    assert generic.headers["Idempotency-Key"] == key
    assert notifier.stats.sent == 2
    assert notifier.stats.failed == 0


async def test_many_evidence_fields_are_split_into_slack_sections(receiver: Receiver) -> None:
    evidence = {f"metric_{i:02d}": i for i in range(23)}
    async with Notifier({"production": [hook(receiver, "/slack", "slack")]}) as notifier:
        notifier.notify(rolled_back(evidence=evidence))
        await receiver.wait_for(1)
    blocks = receiver.requests[0].body["blocks"]
    sections = [b for b in blocks if "fields" in b]
    assert [len(s["fields"]) for s in sections] == [10, 10, 3]


async def test_retries_on_500_then_succeeds(receiver: Receiver) -> None:
    receiver.behaviours["/flaky"] = Behaviour(fail_first=2, status=500)
    outcomes: list[str] = []
    async with Notifier(
        {"production": [hook(receiver, "/flaky")]},
        retry=FAST,
        on_outcome=lambda outcome, _n, _w: outcomes.append(outcome),
    ) as notifier:
        notifier.notify(rolled_back())
        await receiver.wait_for(3)
    assert len(receiver.at("/flaky")) == 3
    keys = {r.headers["Idempotency-Key"] for r in receiver.requests}
    assert keys == {rolled_back().idempotency_key}, "a retry must carry the same key"
    assert notifier.stats.retries == 2
    assert notifier.stats.sent == 1
    assert outcomes == ["retried", "retried", "sent"]


async def test_429_honours_retry_after(receiver: Receiver) -> None:
    receiver.behaviours["/limited"] = Behaviour(fail_first=1, status=429, retry_after="0.3")
    # Backoff alone would retry after at most 10 ms; Retry-After asks for 300 ms.
    policy = RetryPolicy(attempts=3, base=0.01, cap=0.01, retry_after_cap=5.0)
    async with Notifier({"production": [hook(receiver, "/limited")]}, retry=policy) as notifier:
        started = time.monotonic()
        notifier.notify(rolled_back())
        await receiver.wait_for(2)
        waited = time.monotonic() - started
    assert waited >= 0.3
    assert notifier.stats.sent == 1


async def test_timeout_is_retried(receiver: Receiver) -> None:
    receiver.behaviours["/slow"] = Behaviour(hang_first=1)
    async with Notifier(
        {"production": [hook(receiver, "/slow", timeout=0.3)]}, retry=FAST
    ) as notifier:
        notifier.notify(rolled_back())
        await receiver.wait_for(1)
    assert receiver.seen["/slow"] == 2
    assert notifier.stats.retries == 1
    assert notifier.stats.sent == 1


async def test_gives_up_after_the_attempts_and_logs(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.behaviours["/down"] = Behaviour(fail_first=100, status=503)
    caplog.set_level(logging.INFO, logger="coordinator.daemon.notify")
    notifier = Notifier({"production": [hook(receiver, "/down")]}, retry=FAST)
    notifier.start()
    notifier.notify(rolled_back())
    await receiver.wait_for(FAST.attempts)
    await notifier.close(drain_timeout=5)
    assert len(receiver.at("/down")) == FAST.attempts
    assert notifier.stats.failed == 1
    assert notifier.stats.sent == 0
    assert notifier.stats.retries == FAST.attempts - 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "giving up after 4 attempt(s): HTTP 503" in errors[0].getMessage()
    # The webhook's path is its secret: never logged.
    assert "/down" not in caplog.text


async def test_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.behaviours["/gone"] = Behaviour(fail_first=100, status=404)
    async with Notifier({"production": [hook(receiver, "/gone")]}, retry=FAST) as notifier:
        notifier.notify(rolled_back())
        await receiver.wait_for(1)
    assert len(receiver.at("/gone")) == 1
    assert notifier.stats.failed == 1
    assert notifier.stats.retries == 0


async def test_connection_refused_is_retried_then_given_up() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now.
    dead = Webhook(url=f"http://127.0.0.1:{port}/hook", timeout=1.0)
    notifier = Notifier({"production": [dead]}, retry=FAST)
    notifier.start()
    notifier.notify(rolled_back())
    await notifier.close(drain_timeout=5)
    assert notifier.stats.retries == FAST.attempts - 1
    assert notifier.stats.failed == 1


async def test_duplicate_notify_is_sent_once(receiver: Receiver) -> None:
    async with Notifier({"production": [hook(receiver, "/json")]}, retry=FAST) as notifier:
        assert notifier.notify(rolled_back())
        # As after a crash-resume: the same state change, reported again.
        assert not notifier.notify(rolled_back(time=1_700_000_100.0))
        assert notifier.notify(rolled_back(kind="step_promoted", key="step-1"))
        assert not notifier.notify(rolled_back(kind="step_promoted", key="step-1"))
        assert notifier.notify(rolled_back(kind="step_promoted", key="step-2"))
        await receiver.wait_for(3)
    assert [r.body["kind"] for r in receiver.requests] == [
        "rolled_back",
        "step_promoted",
        "step_promoted",
    ]
    assert [r.body["key"] for r in receiver.requests] == ["", "step-1", "step-2"]
    assert notifier.stats.duplicates == 2
    assert notifier.stats.sent == 3


async def test_routing_by_environment(receiver: Receiver) -> None:
    targets = {
        "production": [hook(receiver, "/prod-a"), hook(receiver, "/prod-b", "slack")],
        "staging": [hook(receiver, "/staging")],
        "development": [],
    }
    async with Notifier(targets, retry=FAST) as notifier:
        assert notifier.notify(rolled_back())
        assert notifier.notify(rolled_back(environment="staging"))
        assert not notifier.notify(rolled_back(environment="development"))
        await receiver.wait_for(3)
    assert len(receiver.at("/prod-a")) == 1
    assert len(receiver.at("/prod-b")) == 1
    [staging] = receiver.at("/staging")
    assert staging.body["environment"] == "staging"
    assert receiver.at("/prod-a")[0].body["environment"] == "production"
    assert notifier.stats.unrouted == 1


async def test_order_is_kept_per_target(receiver: Receiver) -> None:
    receiver.behaviours["/ordered"] = Behaviour(fail_first=1, status=500)
    kinds = ["deployment_started", "step_promoted", "paused", "resumed", "completed"]
    async with Notifier({"production": [hook(receiver, "/ordered")]}, retry=FAST) as notifier:
        for i, kind in enumerate(kinds):
            notifier.notify(rolled_back(kind=kind, key=str(i)))
        await receiver.wait_for(len(kinds) + 1)
    assert [r.body["kind"] for r in receiver.requests] == [kinds[0], *kinds]


async def test_a_dead_target_does_not_delay_another(receiver: Receiver) -> None:
    receiver.behaviours["/hung"] = Behaviour(hang_first=100)
    targets = {"production": [hook(receiver, "/hung", timeout=5.0), hook(receiver, "/fine")]}
    notifier = Notifier(targets, retry=FAST)
    notifier.start()
    started = time.monotonic()
    notifier.notify(rolled_back())
    await receiver.wait_for(1, within=3.0)
    assert time.monotonic() - started < 3.0
    assert len(receiver.at("/fine")) == 1
    await notifier.close(drain_timeout=0.2)
    # The hung delivery was abandoned at close, and counted.
    assert notifier.stats.dropped == 1
    assert notifier.stats.sent == 1


async def test_notify_never_blocks_and_a_full_queue_drops_the_oldest(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"production": [hook(receiver, "/json")]}, queue_size=2, retry=FAST)
    started = time.monotonic()
    for i in range(5):
        assert notifier.notify(rolled_back(kind="step_promoted", key=f"step-{i}"))
    assert time.monotonic() - started < 0.1
    assert notifier.stats.dropped == 3
    assert "queue full, dropped oldest" in caplog.text
    notifier.start()
    await receiver.wait_for(2)
    await notifier.close()
    assert [r.body["key"] for r in receiver.requests] == ["step-3", "step-4"]


async def test_close_drains_what_is_queued(receiver: Receiver) -> None:
    notifier = Notifier({"production": [hook(receiver, "/json")]}, retry=FAST)
    notifier.start()
    for i in range(20):
        notifier.notify(rolled_back(kind="alert_fired", key=f"a{i}"))
    await notifier.close(drain_timeout=5)
    assert len(receiver.requests) == 20
    assert notifier.stats.sent == 20
    assert not notifier.notify(rolled_back(kind="alert_fired", key="late"))


async def test_unencodable_evidence_fails_one_delivery_not_the_worker(receiver: Receiver) -> None:
    async with Notifier({"production": [hook(receiver, "/json")]}, retry=FAST) as notifier:
        notifier.notify(rolled_back(evidence={"oops": object()}))
        notifier.notify(rolled_back(kind="completed"))
        await receiver.wait_for(1)
    assert [r.body["kind"] for r in receiver.requests] == ["completed"]
    assert notifier.stats.failed == 1
    assert notifier.stats.sent == 1
