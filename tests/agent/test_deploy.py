"""Deploy, switch and rollback on disk: releases + atomic symlink, hooks, failures."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.deploy import Deployer
from agent.store import Store
from shared.config.agent import DeployConfig
from shared.messages import Command


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def command(action: str, deployment: str = "dep-1", **fields: object) -> Command:
    given: dict[str, Any] = {
        "id": f"cmd-{action}-{deployment}",
        "host": "host-a",
        "deployment": deployment,
        "action": action,
        "issued": 1.0,
        "expires": 2.0,
        **fields,
    }
    return Command(**given)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    for version in ("1.0.0", "2.0.0"):
        (root / "releases" / version).mkdir(parents=True)
    os.symlink("releases/1.0.0", root / "current")
    return root


def deployer(root: Path, tmp_path: Path, **config: object) -> Deployer:
    store = Store.open(tmp_path / "state")
    cfg = msgspec.convert({"root": str(root), **config}, DeployConfig)
    return Deployer(cfg, host="host-a", store=store)


async def test_deploy_switches_current_atomically_and_restarts(site: Path, tmp_path: Path) -> None:
    log = tmp_path / "restarts.log"
    restart = script(
        tmp_path / "restart",
        f'echo "restart $1 $(readlink current)" >> {log}\necho restarted "$1"\n',
    )
    d = deployer(site, tmp_path, restart_command=[restart, "{version}"])
    assert d.current.version == "1.0.0"  # read from the symlink at start
    outcome = await d.deploy(command("deploy", version="2.0.0"))
    assert outcome.ok, outcome.detail
    assert outcome.detail == "current -> releases/2.0.0; restart command ok: restarted 2.0.0"
    assert os.readlink(site / "current") == "releases/2.0.0"
    assert log.read_text() == "restart 2.0.0 releases/2.0.0\n"  # ran in root, after the switch
    assert d.current.version == "2.0.0" and d.state.previous is not None
    assert sorted(os.listdir(site)) == ["current", "releases"]  # no temporary link left

    back = await d.rollback(command("rollback"))
    assert back.ok, back.detail
    assert os.readlink(site / "current") == "releases/1.0.0"
    assert d.current.version == "1.0.0"
    assert log.read_text().splitlines()[-1] == "restart 1.0.0 releases/1.0.0"
    # A second rollback of the same deployment finds the host there: nothing toggles.
    again = await d.rollback(command("rollback"))
    assert again == (True, "already at version 1.0.0; nothing to do")
    assert os.readlink(site / "current") == "releases/1.0.0"


async def test_failing_restart_fails_the_deploy_with_its_output_and_rollback_recovers(
    site: Path, tmp_path: Path
) -> None:
    restart = script(
        tmp_path / "restart", 'if [ "$1" = 2.0.0 ]; then echo "port 3000 in use" >&2; exit 3; fi\n'
    )
    d = deployer(site, tmp_path, restart_command=[restart, "{version}"])
    outcome = await d.deploy(command("deploy", version="2.0.0"))
    assert outcome.ok is False
    assert outcome.detail == (
        "current -> releases/2.0.0; restart command failed (exit 3): port 3000 in use"
    )
    # The link moved (the host reports what is linked); the coordinator rolls back.
    assert d.current.version == "2.0.0"
    back = await d.rollback(command("rollback"))
    assert back.ok, back.detail
    assert os.readlink(site / "current") == "releases/1.0.0" and d.current.version == "1.0.0"


async def test_restart_that_hangs_is_killed_at_the_timeout(site: Path, tmp_path: Path) -> None:
    restart = script(tmp_path / "restart", "echo starting\nsleep 30\n")
    d = deployer(site, tmp_path, restart_command=[restart], timeout=0.5)
    outcome = await d.deploy(command("deploy", version="2.0.0"))
    assert outcome.ok is False
    assert outcome.detail == (
        "current -> releases/2.0.0; restart command failed (timed out after 0.5s): starting"
    )


async def test_missing_release_without_a_hook_changes_nothing(site: Path, tmp_path: Path) -> None:
    d = deployer(site, tmp_path)
    outcome = await d.deploy(command("deploy", version="3.0.0"))
    assert outcome.ok is False
    assert "releases/3.0.0 does not exist and no deploy.deploy_hook" in outcome.detail
    assert os.readlink(site / "current") == "releases/1.0.0" and d.current.version == "1.0.0"


async def test_deploy_hook_fetches_a_missing_release(site: Path, tmp_path: Path) -> None:
    fetch = script(tmp_path / "fetch", 'mkdir -p "$1" && echo fetched "$2"\n')
    d = deployer(site, tmp_path, deploy_hook=[fetch, "{release}", "{version}"])
    outcome = await d.deploy(command("deploy", version="3.0.0"))
    assert outcome.ok, outcome.detail
    assert outcome.detail == "deploy hook ok: fetched 3.0.0; current -> releases/3.0.0"
    assert os.readlink(site / "current") == "releases/3.0.0"


async def test_state_survives_a_restart_of_the_agent(site: Path, tmp_path: Path) -> None:
    d = deployer(site, tmp_path)
    assert (await d.deploy(command("deploy", version="2.0.0"))).ok
    d.store.close()
    again = deployer(site, tmp_path)
    assert again.current.version == "2.0.0"
    assert (await again.rollback(command("rollback"))).ok
    assert os.readlink(site / "current") == "releases/1.0.0"


async def test_hooks_strategy_blue_green_switch_and_rollback(tmp_path: Path) -> None:
    root = tmp_path / "bg"
    root.mkdir()
    log = tmp_path / "hooks.log"
    install = script(tmp_path / "install", f'echo "install $1 on $2" >> {log}\n')
    switch = script(tmp_path / "switch", f'echo "traffic to $1 ($2)" >> {log}\n')
    d = deployer(
        root,
        tmp_path,
        strategy="hooks",
        deploy_hook=[install, "{version}", "{slot}"],
        switch_hook=[switch, "{slot}", "{version}"],
    )
    # Blue serves 1.0.0.
    assert (await d.deploy(command("deploy", "dep-0", version="1.0.0", slot="blue"))).ok
    assert (await d.switch(command("switch", "dep-0", slot="blue"))).ok
    # Deployment dep-1: 2.0.0 on the idle green slot, then traffic to green.
    assert (await d.deploy(command("deploy", version="2.0.0", slot="green"))).ok
    assert (d.current.version, d.current.slot) == ("1.0.0", "blue")  # still serving blue
    assert (await d.switch(command("switch", slot="green"))).ok
    assert (d.current.version, d.current.slot) == ("2.0.0", "green")
    # Roll dep-1 back: traffic returns to blue, running 1.0.0; nothing reinstalled.
    back = await d.rollback(command("rollback"))
    assert back.ok, back.detail
    assert (d.current.version, d.current.slot) == ("1.0.0", "blue")
    assert log.read_text().splitlines() == [
        "install 1.0.0 on blue",
        "traffic to blue (1.0.0)",
        "install 2.0.0 on green",
        "traffic to green (2.0.0)",
        "traffic to blue (1.0.0)",
    ]


async def test_initial_slot_serves_until_a_switch_is_recorded(tmp_path: Path) -> None:
    root = tmp_path / "bg"
    root.mkdir()
    hooks = {"strategy": "hooks", "deploy_hook": ["/bin/true"], "switch_hook": ["/bin/true"]}
    assert deployer(root, tmp_path, **hooks).current.slot is None
    d = deployer(root, tmp_path, initial_slot="blue", **hooks)
    assert (d.current.version, d.current.slot) == (None, "blue")
    # A blue-green deploy goes to green and leaves blue serving; rollback returns there.
    assert (await d.deploy(command("deploy", version="2.0.0", slot="green"))).ok
    assert d.current.slot == "blue"
    assert (await d.switch(command("switch", slot="green"))).ok
    assert (d.current.version, d.current.slot) == ("2.0.0", "green")
    # Recorded state wins over the config from now on, across restarts.
    assert deployer(root, tmp_path, initial_slot="blue", **hooks).current.slot == "green"
    assert (await d.rollback(command("rollback"))).ok
    assert (d.current.version, d.current.slot) == (None, "blue")


async def test_hooks_are_argv_never_a_shell(site: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    d = deployer(
        site,
        tmp_path,
        strategy="hooks",
        deploy_hook=["/bin/echo", "{version}; touch " + str(marker)],
    )
    outcome = await d.deploy(command("deploy", version="2.0.0"))
    assert outcome.ok
    assert not marker.exists()
    assert outcome.detail == f"deploy hook ok: 2.0.0; touch {marker}"


async def test_a_hook_that_cannot_start_is_a_failure(site: Path, tmp_path: Path) -> None:
    d = deployer(site, tmp_path, restart_command=[str(tmp_path / "missing")])
    outcome = await d.deploy(command("deploy", version="2.0.0"))
    assert outcome.ok is False
    assert outcome.detail.endswith(
        f"restart command failed (cannot start {tmp_path / 'missing'}: no such file or directory)"
    )


async def test_hooks_get_rollguard_variables_but_not_the_notify_socket(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "1000")
    hook = script(
        tmp_path / "env",
        'echo "$ROLLGUARD_VERSION $ROLLGUARD_ACTION $ROLLGUARD_DEPLOYMENT '
        '${NOTIFY_SOCKET:-none} ${WATCHDOG_USEC:-none}"\n',
    )
    d = deployer(site, tmp_path, restart_command=[hook])
    outcome = await d.deploy(command("deploy", version="2.0.0"))
    assert outcome.detail.endswith("restart command ok: 2.0.0 deploy dep-1 none none")
