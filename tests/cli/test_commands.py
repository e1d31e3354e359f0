"""Every ``rollguard`` command against a running coordinator over real HTTP: the real
console script as a subprocess, one shared fleet of real processes.

The tests run in file order and each leaves nothing running in production.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from coordinator.devfleet.fleet import DevFleet
from tests.cli.conftest import HOSTS, TERMINAL, settle
from tests.cli.run import OPERATOR, cli_env, connection, rollguard
from tests.processes import script

# The first step confirmed by its hosts (the engine says "reachable" since hosts may be
# away), and its ten-minute bake started.
BAKING = re.compile(r"every (reachable )?host confirmed[^;\n]*; baking 600 s")

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def deployment(fleet: DevFleet, ident: str) -> dict[str, Any]:
    return fleet.deployment(ident)


def wait_until(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_hosts_table_and_json(fleet: DevFleet) -> None:
    table = rollguard("hosts", fleet=fleet)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["HOST", "STATE", "ENV", "VERSION"]
    for host in HOSTS:
        row = next(line for line in lines if line.startswith(host))
        assert row.split()[1:4] == ["online", "production", "1.0.0"]
    data = json.loads(rollguard("hosts", "--json", fleet=fleet).stdout)
    assert sorted(h["host"] for h in data["hosts"]) == HOSTS


def test_status_with_nothing_running(fleet: DevFleet) -> None:
    plain = rollguard("status", fleet=fleet)
    assert plain.returncode == 0, plain.stderr
    assert "no deployment is running" in plain.stdout
    assert json.loads(rollguard("status", "--json", fleet=fleet).stdout) == {"deployments": []}


def test_unknown_deployment_is_a_usage_error(fleet: DevFleet) -> None:
    result = rollguard("status", "no-such-deployment", fleet=fleet)
    assert result.returncode == 2
    assert "no deployment 'no-such-deployment'" in result.stderr


def test_malformed_version_is_refused_naming_the_field(fleet: DevFleet) -> None:
    result = rollguard("deploy", "not a version!", fleet=fleet)
    assert result.returncode == 2
    assert "invalid request body" in result.stderr
    assert "$.version" in result.stderr


def test_bad_token_is_exit_2(fleet: DevFleet, tmp_path: Any) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token-at-all\n")
    argv = ["hosts", "--url", fleet.api.base, "--token-file", str(wrong)]
    result = rollguard(*argv)
    assert result.returncode == 2
    assert "refused the token" in result.stderr
    missing = rollguard("hosts", "--url", fleet.api.base, "--token-file", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr


def test_ctrl_c_leaves_the_deployment_running(fleet: DevFleet, canary: dict[str, str]) -> None:
    """``deploy --wait`` interrupted: exit 130, the canary keeps baking, and the CLI
    says how to follow it again."""
    ident = canary["id"]
    assert canary["returncode"] == "130"
    assert f"deployment {ident} keeps running" in canary["stderr"]
    assert f"rollguard status {ident} --wait" in canary["stderr"]
    assert BAKING.search(canary["stdout"]), canary["stdout"]
    assert deployment(fleet, ident)["state"] == "baking"


@pytest.fixture(scope="module")
def canary(fleet: DevFleet) -> Iterator[dict[str, str]]:
    """A good canary started with ``deploy --wait`` and left running by Ctrl-C."""
    settle(fleet)
    process = subprocess.Popen(
        [
            *script("rollguard"),
            "deploy",
            "2.0.0",
            "--wait",
            "--reason",
            "CHG-1234",
            *connection(fleet),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if "baking 600 s" in line:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=15)
    ident = seen[0].split()[1].rstrip(":")
    yield {
        "id": ident,
        "returncode": str(process.returncode),
        "stdout": "".join(seen) + out,
        "stderr": err,
    }
    settle(fleet)


def _promote_when_ready(fleet: DevFleet, ident: str) -> subprocess.CompletedProcess[str]:
    """Promote as soon as the engine has data to promote on (it refuses before)."""
    deadline = time.monotonic() + 30
    while True:
        result = rollguard("promote", ident, "--reason", "looks good", fleet=fleet)
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        assert result.returncode == 1, result.stderr
        time.sleep(1.0)


def test_operator_commands_drive_a_canary(fleet: DevFleet, canary: dict[str, str]) -> None:
    ident = canary["id"]

    busy = rollguard("deploy", "2.1.0", fleet=fleet)
    assert busy.returncode == 1
    assert f"deployment {ident} is baking in production" in busy.stderr

    listing = rollguard("status", fleet=fleet)
    assert ident in listing.stdout and "baking" in listing.stdout
    detail = rollguard("status", ident, fleet=fleet)
    assert detail.returncode == 0
    assert "1.0.0 -> 2.0.0 in production by canary" in detail.stdout
    assert "step 1/3 (10%, 1 host)" in detail.stdout
    assert "bake left" in detail.stdout

    paused = rollguard("pause", ident, "--reason", "lunch", fleet=fleet)
    assert paused.returncode == 0, paused.stderr
    assert "now paused" in paused.stdout
    again = rollguard("pause", ident, fleet=fleet)
    assert again.returncode == 0
    assert "nothing to do: already paused" in again.stdout
    refused = rollguard("approve", ident, fleet=fleet)
    assert refused.returncode == 1
    assert "nothing awaits approval" in refused.stderr
    resumed = rollguard("resume", ident, fleet=fleet)
    assert resumed.returncode == 0, resumed.stderr
    assert "now baking" in resumed.stdout

    first = _promote_when_ready(fleet, ident)
    assert first.returncode == 0, first.stderr
    assert "promoted past 10%" in first.stdout
    wait_until(lambda: deployment(fleet, ident)["state"] == "baking", 30, "step 50% baking")
    second = _promote_when_ready(fleet, ident)
    assert second.returncode == 0, second.stderr
    assert "now awaiting approval" in second.stdout

    approved = rollguard("approve", ident, "--reason", "CAB ok", "--json", fleet=fleet)
    assert approved.returncode == 0, approved.stderr
    reply = json.loads(approved.stdout)
    assert reply["accepted"] and reply["changed"]
    twice = rollguard("approve", ident, fleet=fleet)
    assert twice.returncode == 0
    assert "nothing to do" in twice.stdout

    rolled = rollguard("rollback", ident, "--reason", "drill", fleet=fleet)
    assert rolled.returncode == 0, rolled.stderr
    assert "rolling back to 1.0.0" in rolled.stdout
    final = fleet.wait_state(ident, TERMINAL, 60)
    assert final["state"] == "rolled_back"
    assert {fleet.linked_version(h) for h in HOSTS} == {"1.0.0"}

    events = fleet.api.get(f"/api/v1/deployments/{ident}/events")["events"]
    acted = {(e["kind"], e["actor"]) for e in events if e["kind"].startswith("operator.")}
    for action in ("pause", "resume", "promote", "approve", "rollback"):
        assert (f"operator.{action}", OPERATOR) in acted
    assert any(e["kind"] == "deployment.rollback" and "drill" in e["message"] for e in events)

    history = rollguard("history", fleet=fleet)
    row = next(line for line in history.stdout.splitlines() if line.startswith(ident))
    assert "1.0.0 -> 2.0.0" in row and "rolled back" in row and OPERATOR in row
    data = json.loads(rollguard("history", "--json", "--limit", "1", fleet=fleet).stdout)
    assert [d["id"] for d in data["deployments"]] == [ident]


def test_refusals_name_their_reasons(fleet: DevFleet) -> None:
    unknown = rollguard("deploy", "2.0.0", "--hosts", "web-1,nope-9", fleet=fleet)
    assert unknown.returncode == 1
    assert "refused: nope-9: unknown host" in unknown.stderr
    assert "  - nope-9: unknown host" in unknown.stderr
    missing = rollguard("pause", "no-such-deployment", fleet=fleet)
    assert missing.returncode == 2
    assert "no deployment 'no-such-deployment'" in missing.stderr


def test_wait_timeout_leaves_the_deployment_running(fleet: DevFleet) -> None:
    settle(fleet)
    result = rollguard(
        "deploy", "2.0.0", "--hosts", "web-1,web-2", "--wait", "--timeout", "3", fleet=fleet
    )
    assert result.returncode == 1, result.stderr
    ident = result.stdout.split()[1].rstrip(":")
    assert f"still baking after 3 s; deployment {ident} keeps running" in result.stderr
    assert deployment(fleet, ident)["state"] == "baking"
    assert sorted(deployment(fleet, ident)["targets"]) == ["web-1", "web-2"]
    settle(fleet)


def test_deploy_wait_json_of_a_good_version_exits_0(fleet: DevFleet) -> None:
    settle(fleet)
    result = rollguard(
        "deploy", "2.0.0", "--strategy", "direct", "--wait", "--json", fleet=fleet, timeout=120
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    final = json.loads(result.stdout)["deployment"]
    assert final["state"] == "completed"
    assert final["strategy"] == "direct"
    assert "completed: every host (4) reports 2.0.0" in result.stderr
    assert {fleet.linked_version(h) for h in HOSTS} == {"2.0.0"}


def test_deploy_wait_of_a_bad_version_exits_3(fleet: DevFleet, rolled_back: dict[str, Any]) -> None:
    result = rolled_back["result"]
    assert result.returncode == 3, (result.stdout, result.stderr)
    out = result.stdout
    assert out.startswith(f"deployment {rolled_back['id']}: 2.1.0 to 4 production hosts")
    assert BAKING.search(out), out
    # 2.0.0 completed just before: it is the stable version now.
    assert "rolling back to 2.0.0: error_rate" in out
    assert "rolled back: every host reports 2.0.0" in out
    # Plain output (not a terminal): progress as lines, no cursor control.
    assert "\x1b[" not in out and "\r" not in out
    assert "[baking · step 1/3 (10%, 1 host)" in out
    assert f"deployment {rolled_back['id']} rolled back after " in out
    assert f"report:  rollguard report {rolled_back['id']}" in out
    assert {fleet.linked_version(h) for h in HOSTS} == {"2.0.0"}


def test_status_wait_of_a_finished_deployment_exits_by_its_outcome(
    fleet: DevFleet, rolled_back: dict[str, Any]
) -> None:
    result = rollguard("status", rolled_back["id"], "--wait", fleet=fleet)
    assert result.returncode == 3
    assert "rolled back" in result.stdout
    assert "error_rate" in result.stdout
