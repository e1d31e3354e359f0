"""``rollguard demo`` end to end, as a newcomer runs it: the good release completes
through every canary step, the bad one is rolled back on its own, the report is
written, and nothing it started outlives it (also when interrupted with Ctrl-C). How
long it takes is printed, not asserted: the machines are shared."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from coordinator.devfleet.broker import mosquitto_binary
from tests.cli.run import cli_env
from tests.conftest import service_missing
from tests.processes import script

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = [f"web-{i}" for i in range(1, 7)]


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")


def processes_under(directory: Path) -> list[str]:
    """Command lines of live processes that mention ``directory`` (every demo child
    names its config or data there)."""
    found = []
    needle = str(directory).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_demo_deploys_a_good_and_a_bad_version(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    started = time.monotonic()
    result = subprocess.run(
        [*script("rollguard"), "demo", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=240,
        env=cli_env(),
        check=False,
    )
    took = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    print(f"rollguard demo took {took:.1f} s")

    good, bad = out.split("== 2. A bad release: 2.1.0 ==")
    # The good release goes through every canary step, each passed on evidence.
    for step in ("10%", "25%", "50%", "100%"):
        assert f"step {step} passed its" in good
    assert "evidence: error_rate:" in good
    assert "completed: every host (6) reports 2.0.0 and is healthy" in good
    assert "=> 2.0.0: completed through every step" in good
    # The bad one is rolled back by the coordinator, with the failing rule in words;
    # 2.0.0 completed before it, so 2.0.0 is the stable version it returns to.
    assert "rolling back to 2.0.0: error_rate" in bad
    assert "evidence (fail): error_rate:" in bad
    assert "=> 2.1.0: rolled back on its own: error_rate" in bad
    assert out.count("checked on every host's disk: current -> releases/2.0.0 on all 6") == 2
    for host in HOSTS:
        assert (directory / "apps" / host / "current").readlink().name == "2.0.0"

    match = re.search(r"the report of the rolled-back deployment: (\S+\.html)", out)
    assert match, out
    report = Path(match.group(1))
    assert report.parent == directory.resolve()
    html = report.read_text()
    assert "<svg" in html and "rolled back" in html
    assert report.with_suffix(".md").exists()

    assert "stopped every process" in out
    assert processes_under(directory) == []


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    process = subprocess.Popen(
        [*script("rollguard"), "demo", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
    )
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if re.search(r"host confirmed[^;]*; baking", line):
            break
    assert processes_under(directory), "the demo's processes should be running:\n" + "".join(seen)
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)
    assert process.returncode == 130, "".join(seen) + rest
    assert "interrupted: stopping every process the demo started" in rest
    assert processes_under(directory) == []


def test_demo_refuses_to_wipe_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run(
        [*script("rollguard"), "demo", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=cli_env(),
        check=False,
    )
    assert result.returncode == 2
    assert "is not a rollguard demo directory" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_sigterm_stops_a_kept_demo_and_every_process_it_started(tmp_path: Path) -> None:
    """``rollguard demo --keep`` left running, then stopped the way a service manager or
    ``kill`` stops it: its broker, app, coordinator and agents stop with it."""
    directory = tmp_path / "demo"
    process = subprocess.Popen(
        [*script("rollguard"), "demo", "--keep", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
    )
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if "everything keeps running" in line or not line:
            break
    assert "everything keeps running" in seen[-1], "".join(seen)
    assert processes_under(directory), "the kept demo's processes should be running"
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=30)
    assert process.returncode == 130, "".join(seen) + rest
    assert "stopped every process" in rest
    assert processes_under(directory) == []
