"""Blue-green: the agent also probes the inactive slot's own instance (``slot_urls``)
and reports it as ``application_<slot>``, following its deploy state's active slot.

Three real local HTTP servers: the traffic endpoint (``url``), blue, and green, which
answers every probe with a 500. The slot is driven by the hooks strategy with a switch
hook in a temporary directory, directly and through signed commands over the broker.
"""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.app import Agent
from agent.checks import build_checks
from agent.checks.application import ApplicationCheck
from agent.deploy import Deployer
from agent.store import Store
from shared import signing, topics
from shared.config.agent import ApplicationCheck as ApplicationConfig
from shared.messages import Action, Command, CommandResult, MetricBatch, Sample, decode, encode
from shared.mqtt import make_client
from tests.agent.conftest import App, Listener, RecordingSink, agent_config, listening, serving
from tests.conftest import Broker

NO_HOST_CHECKS = {name: {"enabled": False} for name in ("cpu", "memory", "disk", "system")}
REQUESTS = 3


class Slots:
    """The traffic endpoint and each slot's own instance; green fails every probe."""

    def __init__(self, traffic: App, blue: App, green: App) -> None:
        self.traffic, self.blue, self.green = traffic, blue, green

    def application(self, **extra: Any) -> dict[str, Any]:
        return {
            "url": self.traffic.url(),
            "requests": REQUESTS,
            "slot_urls": {"blue": self.blue.url(), "green": self.green.url()},
            **extra,
        }


@pytest.fixture
async def slots() -> AsyncIterator[Slots]:
    async with (
        serving(App()) as traffic,
        serving(App()) as blue,
        serving(App(status=500)) as green,
    ):
        yield Slots(traffic, blue, green)


class Hooks:
    """A hooks-strategy site in a temporary directory: install and switch scripts that
    only log what they were asked to do."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "bg"
        self.root.mkdir()
        self.log = tmp / "hooks.log"
        self.install = self._script(tmp / "install", f'echo "install $1 on $2" >> {self.log}\n')
        self.switch = self._script(tmp / "switch", f'echo "traffic to $1" >> {self.log}\n')

    @staticmethod
    def _script(path: Path, body: str) -> str:
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    def deploy_config(self) -> dict[str, Any]:
        return {
            "strategy": "hooks",
            "root": str(self.root),
            "deploy_hook": [self.install, "{version}", "{slot}"],
            "switch_hook": [self.switch, "{slot}"],
        }

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def hooks(tmp_path: Path) -> Hooks:
    return Hooks(tmp_path)


def order(action: Action, deployment: str, **fields: Any) -> Command:
    now = time.time()
    return Command(
        id=f"{action}-{deployment}-{fields.get('version') or fields.get('slot')}".replace(".", "_"),
        host="host-a",
        deployment=deployment,
        action=action,
        issued=now,
        expires=now + 60,
        **fields,
    )


def by_check(samples: list[Sample]) -> dict[str, Sample]:
    found: dict[str, Sample] = {}
    for sample in samples:
        assert sample.check not in found, f"two {sample.check} samples in one round"
        msgspec.json.decode(msgspec.json.encode(sample), type=Sample)  # wire-valid
        found[sample.check] = sample
    return found


# -- configuration ---------------------------------------------------------------------


def test_slot_urls_default_to_none_and_accept_both_slots() -> None:
    assert agent_config(checks={"application": {}}).checks.application == ApplicationConfig()
    assert ApplicationConfig().slot_urls == {}
    config = msgspec.convert(
        {
            "slot_urls": {
                "blue": "http://127.0.0.1:3001/health",
                "green": "https://green.internal:3002/health",
            }
        },
        ApplicationConfig,
    )
    assert config.slot_urls["green"] == "https://green.internal:3002/health"


@pytest.mark.parametrize(
    ("slot_urls", "message"),
    [
        ({"green": "http://127.0.0.1:3002/"}, "slot_urls needs both blue and green (missing blue)"),
        (
            {"blue": "http://127.0.0.1:3001/", "green": "ftp://127.0.0.1:3002/"},
            "slot_urls.green must be an http:// or https:// URL with a host, not 'ftp://",
        ),
        (
            {"blue": "http://127.0.0.1:99999/", "green": "http://127.0.0.1:3002/"},
            "slot_urls.blue: Port out of range",
        ),
        (
            {"blue": "http://127.0.0.1:3000/health", "green": "http://127.0.0.1:3002/"},
            "slot_urls.blue is checks.application.url",
        ),
        (
            {"blue": "http://127.0.0.1:3001/", "green": "http://127.0.0.1:3001/"},
            "blue and green are the same URL",
        ),
        (
            {"blue": "http://127.0.0.1:3001/", "red": "http://127.0.0.1:3002/"},
            "Invalid enum value 'red'",
        ),
    ],
)
def test_bad_slot_urls_are_refused_with_the_reason(slot_urls: Any, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        agent_config(checks={"application": {"slot_urls": slot_urls}})
    assert message in str(caught.value)


# -- the checks, driven by a real deploy state -------------------------------------------


async def one_round(checks: list[Any]) -> dict[str, Sample]:
    sink = RecordingSink()
    await asyncio.gather(*(check.collect(sink) for check in checks))
    return by_check(sink.samples)


async def test_the_inactive_slot_follows_deploys_and_switches(
    slots: Slots, hooks: Hooks, tmp_path: Path
) -> None:
    config = agent_config(
        state_dir=str(tmp_path / "state"),
        checks={**NO_HOST_CHECKS, "application": slots.application()},
        deploy=hooks.deploy_config(),
    )
    deployer = Deployer(config.deploy, host="host-a", store=Store.open(config.state_dir))
    checks = build_checks(config.checks, active_slot=lambda: deployer.current.slot)
    assert [c.name for c in checks] == ["application", "application_blue", "application_green"]

    # No slot known yet (nothing switched): only the traffic endpoint is probed.
    assert list(await one_round(checks)) == ["application"]
    assert (slots.blue.hits, slots.green.hits) == (0, 0)

    # Blue serves 1.0.0; a blue-green deploy puts 2.0.0 on green, the inactive slot.
    assert (await deployer.deploy(order("deploy", "dep-0", version="1.0.0", slot="blue"))).ok
    assert (await deployer.switch(order("switch", "dep-0", slot="blue"))).ok
    assert (await deployer.deploy(order("deploy", "dep-1", version="2.0.0", slot="green"))).ok
    assert deployer.current.slot == "blue"
    samples = await one_round(checks)
    assert sorted(samples) == ["application", "application_green"]
    green = samples["application_green"]
    # Green's own numbers: every probe answered 500, counted like the main probe's.
    assert (green.values["requests"], green.values["errors"]) == (REQUESTS, REQUESTS)
    assert green.values["error_rate"] == 1.0 and green.values["responses"] == REQUESTS
    assert green.ok is False
    assert green.error == f"{REQUESTS} of {REQUESTS} probes failed: HTTP 500 x{REQUESTS}"
    assert len(green.latencies_ms) == REQUESTS
    assert (slots.blue.hits, slots.green.hits) == (0, REQUESTS)
    # The traffic endpoint's sample is its own, untouched by green's failures.
    main = samples["application"]
    assert main.ok and main.error is None
    assert (main.values["requests"], main.values["errors"]) == (REQUESTS, 0)

    # Traffic to green: now blue is the inactive slot, and only blue is probed.
    assert (await deployer.switch(order("switch", "dep-1", slot="green"))).ok
    samples = await one_round(checks)
    assert sorted(samples) == ["application", "application_blue"]
    blue = samples["application_blue"]
    assert blue.ok and blue.error is None
    assert (blue.values["requests"], blue.values["errors"]) == (REQUESTS, 0)
    assert (slots.blue.hits, slots.green.hits) == (REQUESTS, REQUESTS)
    assert samples["application"].values["errors"] == 0
    assert slots.traffic.hits == 3 * REQUESTS
    assert hooks.lines() == [
        "install 1.0.0 on blue",
        "traffic to blue",
        "install 2.0.0 on green",
        "traffic to green",
    ]

    # The slot is deploy state: a restarted agent probes the same inactive slot.
    restarted = Deployer(config.deploy, host="host-a", store=Store.open(config.state_dir))
    again = build_checks(config.checks, active_slot=lambda: restarted.current.slot)
    assert sorted(await one_round(again)) == ["application", "application_blue"]


async def test_a_fresh_install_probes_the_slot_opposite_its_initial_slot(
    slots: Slots, hooks: Hooks, tmp_path: Path
) -> None:
    config = agent_config(
        state_dir=str(tmp_path / "state"),
        checks={**NO_HOST_CHECKS, "application": slots.application()},
        deploy={**hooks.deploy_config(), "initial_slot": "green"},
    )
    deployer = Deployer(config.deploy, host="host-a", store=Store.open(config.state_dir))
    checks = build_checks(config.checks, active_slot=lambda: deployer.current.slot)
    samples = await one_round(checks)
    assert sorted(samples) == ["application", "application_blue"]
    assert samples["application_blue"].values["errors"] == 0
    assert (slots.blue.hits, slots.green.hits) == (REQUESTS, 0)


async def test_without_slot_urls_there_is_no_extra_check(slots: Slots) -> None:
    config = agent_config(checks={**NO_HOST_CHECKS, "application": {"url": slots.traffic.url()}})
    checks = build_checks(config.checks, active_slot=lambda: "blue")
    assert [c.name for c in checks] == ["application"]
    assert list(await one_round(checks)) == ["application"]
    assert (slots.blue.hits, slots.green.hits) == (0, 0)


async def test_a_slot_probe_never_scrapes_and_keeps_its_timeout(
    slots: Slots, silent_port: int
) -> None:
    # The traffic endpoint's metrics are real traffic; the inactive slot has none.
    slots.traffic.metrics = 'http_requests_total{code="200"} 1\n'
    config = msgspec.convert(
        slots.application(
            metrics_url=slots.traffic.url("/metrics"),
            slot_urls={"blue": slots.blue.url(), "green": f"http://127.0.0.1:{silent_port}/"},
            interval=1.0,
            timeout=0.5,
        ),
        ApplicationConfig,
    )
    blue = ApplicationCheck(config, slot="blue", active_slot=lambda: "blue")
    green = ApplicationCheck(config, slot="green", active_slot=lambda: "blue")
    assert (blue._scrape_target, green._scrape_target) == (None, None)
    samples = await one_round([blue, green])
    assert sorted(samples) == ["application_green"]  # blue serves traffic: not probed
    hung = samples["application_green"]
    assert hung.ok is False
    assert hung.error == (
        f"{REQUESTS} of {REQUESTS} probes failed: timed out after 0.45s x{REQUESTS}"
    )
    assert not any(key.startswith("traffic_") for key in hung.values)
    # Without a way to know the active slot, a slot check measures nothing.
    assert await one_round([ApplicationCheck(config, slot="green")]) == {}


# -- end to end: signed commands over the broker, samples on the metrics topic ------------


def sent(listener: Listener) -> list[Sample]:
    return [
        sample
        for payload in listener.on(topics.metrics("host-a"))
        for sample in decode(MetricBatch, payload).samples
    ]


def of(listener: Listener, check: str) -> list[Sample]:
    return [s for s in sent(listener) if s.check == check]


@pytest.mark.integration
async def test_agent_publishes_the_inactive_slot_after_a_blue_green_deploy(
    broker: Broker, slots: Slots, hooks: Hooks, tmp_path: Path
) -> None:
    private_path, public_path = signing.generate_keypair(tmp_path / "keys")
    key = signing.load_private_key(private_path)
    config = agent_config(
        state_dir=str(tmp_path / "state"),
        public_key_file=str(public_path),
        mqtt=msgspec.to_builtins(broker.mqtt("host-a")),
        publish={"linger": 0.05},
        checks={
            **NO_HOST_CHECKS,
            "jitter": 0.0,
            "application": slots.application(interval=0.4, timeout=0.4),
        },
        deploy=hooks.deploy_config(),
    )
    agent = Agent(config)
    task = asyncio.create_task(agent.run())
    try:
        async with listening(broker.operator(), ["rollguard/v1/hosts/host-a/#"]) as seen:

            async def command(action: Action, deployment: str, **fields: Any) -> float:
                """Send it signed; the time of its final result."""
                signed = signing.sign(order(action, deployment, **fields), key)
                async with make_client(broker.coordinator(), identifier="test-coord") as client:
                    await client.publish(topics.cmd("host-a"), encode(signed), qos=1)
                (done,) = await seen.wait(
                    lambda: [
                        r
                        for p in seen.on(topics.cmd_result("host-a"))
                        if (r := decode(CommandResult, p)).id == signed.id and r.state != "accepted"
                    ],
                    within=15,
                )
                assert done.state == "succeeded", done.detail
                return float(done.time)

            # No active slot yet: the traffic endpoint alone. (Samples arriving also
            # means the agent is connected and subscribed to its commands.)
            await seen.wait(lambda: len(of(seen, "application")) >= 2)
            assert {s.check for s in sent(seen)} == {"application"}

            # Blue serves 1.0.0, then a blue-green deploy of 2.0.0 goes to green.
            await command("deploy", "dep-0", version="1.0.0", slot="blue")
            assert of(seen, "application_blue") == of(seen, "application_green") == []
            switched_blue = await command("switch", "dep-0", slot="blue")
            deployed = await command("deploy", "dep-1", version="2.0.0", slot="green")
            await seen.wait(
                lambda: len([s for s in of(seen, "application_green") if s.time > deployed]) >= 2
            )
            greens = of(seen, "application_green")
            assert all(s.time >= switched_blue for s in greens)
            for green in greens:
                assert (green.values["requests"], green.values["errors"]) == (REQUESTS, REQUESTS)
                assert green.ok is False and "HTTP 500" in (green.error or "")
            assert of(seen, "application_blue") == []

            # Traffic to green: blue, still on 1.0.0, is the inactive slot now.
            switched_green = await command("switch", "dep-1", slot="green")
            blues = await seen.wait(lambda: len(b := of(seen, "application_blue")) >= 2 and b)
            for blue in blues:
                assert blue.time >= switched_green
                assert blue.ok and (blue.values["requests"], blue.values["errors"]) == (REQUESTS, 0)
            # Nothing measured green after the switch made it the live slot.
            assert all(s.time < switched_green for s in of(seen, "application_green"))

            # The traffic endpoint's sample went on throughout, healthy and unaffected.
            mains = of(seen, "application")
            assert len(mains) >= 5
            assert all(
                s.ok and s.values["errors"] == 0 and s.values["requests"] == REQUESTS for s in mains
            )
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)
    assert hooks.lines() == [
        "install 1.0.0 on blue",
        "traffic to blue",
        "install 2.0.0 on green",
        "traffic to green",
    ]
