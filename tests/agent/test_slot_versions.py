"""Blue-green with the hooks strategy: which version each slot holds, so the host reports
the version of the slot serving traffic, from before its first deploy (initial_version)
through deploys, switches, switch-backs, rollbacks, failures and restarts."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.app import Agent
from agent.deploy import STATE_KEY, Deployer
from agent.store import Store
from shared.config.agent import DeployConfig
from shared.messages import Action, Command
from tests.agent.conftest import agent_config


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def command(action: Action, deployment: str = "dep-1", **fields: Any) -> Command:
    return Command(
        id=f"cmd-{action}-{deployment}-{fields.get('slot', '')}",
        host="host-a",
        deployment=deployment,
        action=action,
        issued=1.0,
        expires=2.0,
        **fields,
    )


class Site:
    """A hooks-strategy host with two slots; the hooks log what they were asked to do."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "bg"
        self.root.mkdir()
        self.log = tmp / "hooks.log"
        self.fail = tmp / "fail-deploys"
        install = script(
            tmp / "install",
            f'if [ -e {self.fail} ]; then echo "disk full" >&2; exit 1; fi\n'
            f'echo "install $1 on $2" >> {self.log}\n',
        )
        switch = script(tmp / "switch", f'echo "traffic to $1 ($2)" >> {self.log}\n')
        self.hooks: dict[str, Any] = {
            "strategy": "hooks",
            "root": str(self.root),
            "deploy_hook": [install, "{version}", "{slot}"],
            "switch_hook": [switch, "{slot}", "{version}"],
        }
        self.store: Store | None = None

    def agent(self, **config: Any) -> Deployer:
        """A (re)started agent's deployer on this host's state."""
        if self.store is not None:
            self.store.close()
        self.store = Store.open(self.tmp / "state")
        cfg = msgspec.convert({**self.hooks, **config}, DeployConfig)
        return Deployer(cfg, host="host-a", store=self.store)

    def staging(self, **config: Any) -> Deployer:
        return self.agent(**{"initial_slot": "blue", "initial_version": "1.0.0", **config})

    def hook_log(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def serving(d: Deployer) -> tuple[str | None, str | None]:
    return d.current.version, d.current.slot


async def test_a_fresh_install_reports_the_initial_version_on_the_initial_slot(
    site: Site,
) -> None:
    d = site.staging()
    assert serving(d) == ("1.0.0", "blue")
    assert d.state.slots == {"blue": "1.0.0"}
    # Nothing recorded yet: a changed config still applies.
    assert serving(site.staging(initial_version="1.0.1")) == ("1.0.1", "blue")
    assert serving(site.staging(initial_slot="green")) == ("1.0.0", "green")
    assert serving(site.agent(initial_slot="blue")) == (None, "blue")


async def test_deploy_to_the_idle_slot_then_switch_and_switch_back(site: Site) -> None:
    d = site.staging()
    assert (await d.deploy(command("deploy", version="2.0.0", slot="green"))).ok
    assert serving(d) == ("1.0.0", "blue")  # green holds 2.0.0 and serves nobody yet
    assert d.state.slots == {"blue": "1.0.0", "green": "2.0.0"}
    assert (await d.switch(command("switch", slot="green"))).ok
    assert serving(d) == ("2.0.0", "green")
    # The coordinator's switch-back names only the slot.
    assert (await d.switch(command("switch", slot="blue"))).ok
    assert serving(d) == ("1.0.0", "blue")
    assert site.hook_log() == [
        "install 2.0.0 on green",
        "traffic to green (2.0.0)",
        "traffic to blue (1.0.0)",
    ]


async def test_rollback_returns_to_the_version_of_the_slot_it_switches_to(
    site: Site,
) -> None:
    d = site.staging()
    assert (await d.deploy(command("deploy", version="2.0.0", slot="green"))).ok
    assert (await d.switch(command("switch", slot="green"))).ok
    back = await d.rollback(command("rollback"))
    assert back.ok, back.detail
    assert serving(d) == ("1.0.0", "blue")
    assert site.hook_log()[-1] == "traffic to blue (1.0.0)"  # switched, nothing reinstalled
    again = await d.rollback(command("rollback"))
    assert again == (True, "already at version 1.0.0 slot blue; nothing to do")


async def test_recorded_versions_win_over_the_config_across_restarts(site: Site) -> None:
    d = site.staging()
    assert (await d.deploy(command("deploy", version="2.0.0", slot="green"))).ok
    # Restarted between the deploy and the switch, with a different initial version.
    d = site.staging(initial_version="0.9.0")
    assert serving(d) == ("1.0.0", "blue")
    assert (await d.switch(command("switch", slot="green"))).ok
    d = site.staging(initial_version="0.9.0")
    assert serving(d) == ("2.0.0", "green")
    assert (await d.switch(command("switch", slot="blue"))).ok
    assert serving(d) == ("1.0.0", "blue")
    assert serving(site.staging(initial_version="0.9.0")) == ("1.0.0", "blue")


async def test_a_second_deployment_goes_to_the_other_slot(site: Site) -> None:
    d = site.staging()
    assert (await d.deploy(command("deploy", "dep-1", version="2.0.0", slot="green"))).ok
    assert (await d.switch(command("switch", "dep-1", slot="green"))).ok
    # The next deployment installs on blue, now idle; green keeps serving 2.0.0.
    d = site.staging()
    assert (await d.deploy(command("deploy", "dep-2", version="3.0.0", slot="blue"))).ok
    assert serving(d) == ("2.0.0", "green")
    assert d.state.slots == {"blue": "3.0.0", "green": "2.0.0"}
    assert (await d.switch(command("switch", "dep-2", slot="blue"))).ok
    assert serving(d) == ("3.0.0", "blue")
    d = site.staging()  # restarted: blue's 3.0.0 is recorded, the initial 1.0.0 is gone
    assert serving(d) == ("3.0.0", "blue")
    # Rolling dep-2 back returns to green, still holding 2.0.0, without reinstalling.
    back = await d.rollback(command("rollback", "dep-2"))
    assert back.ok, back.detail
    assert serving(d) == ("2.0.0", "green")
    # So does the coordinator's switch-back, which names only the slot.
    assert (await d.switch(command("switch", "dep-2", slot="blue"))).ok
    assert (await d.switch(command("switch", "dep-2-back", slot="green"))).ok
    assert serving(d) == ("2.0.0", "green")
    assert site.hook_log() == [
        "install 2.0.0 on green",
        "traffic to green (2.0.0)",
        "install 3.0.0 on blue",
        "traffic to blue (3.0.0)",
        "traffic to green (2.0.0)",
        "traffic to blue (3.0.0)",
        "traffic to green (2.0.0)",
    ]


async def test_a_failed_deploy_leaves_the_slot_unknown_even_after_a_restart(
    site: Site,
) -> None:
    d = site.staging()
    assert (await d.deploy(command("deploy", "dep-1", version="2.0.0", slot="green"))).ok
    assert (await d.switch(command("switch", "dep-1", slot="green"))).ok
    site.fail.touch()
    failed = await d.deploy(command("deploy", "dep-2", version="3.0.0", slot="blue"))
    assert failed == (False, "deploy hook failed (exit 1): disk full")
    assert serving(d) == ("2.0.0", "green")  # the serving slot is untouched
    assert d.state.slots == {"blue": None, "green": "2.0.0"}
    # Blue no longer holds 1.0.0, and the configured initial version does not say so
    # again after a restart.
    d = site.staging()
    assert d.state.slots == {"blue": None, "green": "2.0.0"}
    assert (await d.switch(command("switch", "dep-3", slot="blue"))).ok
    assert serving(d) == (None, "blue")
    assert site.hook_log()[-1] == "traffic to blue ()"
    # A switch that names the version it expects reports that one.
    assert (await d.switch(command("switch", "dep-4", slot="green"))).ok
    assert (await d.switch(command("switch", "dep-5", slot="blue", version="3.0.0"))).ok
    assert serving(d) == ("3.0.0", "blue")


async def test_an_agent_stopped_mid_deploy_does_not_trust_the_slot(site: Site) -> None:
    d = site.staging()
    assert (await d.deploy(command("deploy", "dep-1", version="2.0.0", slot="green"))).ok
    assert (await d.switch(command("switch", "dep-1", slot="green"))).ok
    hang = script(site.tmp / "hang", "sleep 30\n")
    d = site.staging(deploy_hook=[hang])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            d.deploy(command("deploy", "dep-2", version="3.0.0", slot="blue")), 0.5
        )
    d = site.staging()
    assert serving(d) == ("2.0.0", "green")
    assert d.state.slots == {"blue": None, "green": "2.0.0"}


async def test_a_redeploy_to_the_idle_slot_after_a_failure_records_it_again(
    site: Site,
) -> None:
    d = site.staging()
    site.fail.touch()
    assert not (await d.deploy(command("deploy", "dep-1", version="2.0.0", slot="green"))).ok
    site.fail.unlink()
    assert (await d.deploy(command("deploy", "dep-2", version="2.0.1", slot="green"))).ok
    assert (await d.switch(command("switch", "dep-2", slot="green"))).ok
    assert serving(d) == ("2.0.1", "green")


async def test_state_recorded_before_per_slot_versions_is_completed(site: Site) -> None:
    """An agent upgraded in place: its state knows the serving slot, maybe its version,
    and at most the idle slot's version."""
    store = Store.open(site.tmp / "state")
    store.put(STATE_KEY, b'{"current":{"slot":"blue"},"slots":{"green":"2.0.0"}}')
    store.close()
    d = site.staging()
    assert serving(d) == ("1.0.0", "blue")
    assert (await d.switch(command("switch", slot="green"))).ok
    assert serving(d) == ("2.0.0", "green")

    site.store = None
    (site.tmp / "state").rename(site.tmp / "old-state")
    store = Store.open(site.tmp / "state")
    store.put(STATE_KEY, b'{"current":{"version":"2.0.0","slot":"green"}}')
    store.close()
    d = site.staging()
    assert serving(d) == ("2.0.0", "green")
    assert d.state.slots == {"blue": "1.0.0", "green": "2.0.0"}
    assert (await d.switch(command("switch", slot="blue"))).ok
    assert serving(d) == ("1.0.0", "blue")


async def test_hooks_without_slots_start_from_the_initial_version(site: Site) -> None:
    d = site.agent(initial_version="1.0.0")
    assert serving(d) == ("1.0.0", None)
    assert (await d.deploy(command("deploy", version="2.0.0"))).ok
    assert serving(d) == ("2.0.0", None)
    assert serving(site.agent(initial_version="1.0.0")) == ("2.0.0", None)
    d = site.agent(initial_version="1.0.0")
    back = await d.rollback(command("rollback"))
    assert back.ok, back.detail
    assert serving(d) == ("1.0.0", None)
    assert site.hook_log() == ["install 2.0.0 on ", "install 1.0.0 on "]


def test_the_agent_publishes_the_initial_version(tmp_path: Path) -> None:
    config = agent_config(
        environment="staging",
        state_dir=str(tmp_path / "state"),
        deploy={
            "strategy": "hooks",
            "deploy_hook": ["/bin/true"],
            "switch_hook": ["/bin/true"],
            "initial_slot": "blue",
            "initial_version": "1.0.0",
        },
    )
    agent = Agent(config)
    try:
        status = agent.publisher.status()
        assert (status.version, status.slot) == ("1.0.0", "blue")
    finally:
        agent.store.close()


@pytest.mark.parametrize(
    ("deploy", "error"),
    [
        (
            {"strategy": "hooks", "deploy_hook": ["/bin/true"], "initial_version": "1.0 beta"},
            "Expected `str` matching regex",
        ),
        (
            {"strategy": "hooks", "deploy_hook": ["/bin/true"], "initial_version": ""},
            "Expected `str` matching regex",
        ),
        (
            {"strategy": "releases", "initial_version": "1.0.0"},
            "deploy.initial_version is for strategy = 'hooks'",
        ),
    ],
)
def test_initial_version_is_validated(deploy: dict[str, Any], error: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=error):
        agent_config(deploy=deploy)
