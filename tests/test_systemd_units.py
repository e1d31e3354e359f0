"""Both systemd units are hardened to an exposure of 2.0 or less (design section 6)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import service_missing

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.mark.parametrize("unit", ["rollguard-coordinator.service", "rollguard-agent.service"])
def test_unit_exposure_is_at_most_2(unit: str) -> None:
    if shutil.which("systemd-analyze") is None:
        service_missing("systemd-analyze (apt-get install systemd)")
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(DEPLOY / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr[-2000:]
    assert float(match.group(1)) <= 2.0, result.stdout
