"""Running the installed ``rollguard`` console script against a fleet, as an operator
would: a subprocess with ``--url`` and ``--token-file``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from coordinator.devfleet.fleet import DevFleet
from tests.processes import script

OPERATOR = "alice-oncall"


def cli_env(**extra: str) -> dict[str, str]:
    """The environment without any ROLLGUARD_* setting, acting as ``OPERATOR``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLGUARD_")}
    env.update({"USER": OPERATOR, "LOGNAME": OPERATOR, "COLUMNS": "200", **extra})
    return env


def token_file(fleet: DevFleet) -> Path:
    return fleet.directory / "coordinator" / "api.token"


def connection(fleet: DevFleet) -> list[str]:
    return ["--url", fleet.api.base, "--token-file", str(token_file(fleet))]


def rollguard(
    *args: str, fleet: DevFleet | None = None, timeout: float = 60.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [*script("rollguard"), *args]
    if fleet is not None:
        # After the subcommand: the options work in either place.
        argv += connection(fleet)
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
        cwd=cwd,
        check=False,
    )
