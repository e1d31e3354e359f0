"""`pip install rollguard` is what a host needs: the agent and the CLI. The agent with
its default checks, and the CLI, load none of the coordinator's libraries (they come
with the `coordinator` extra), and the package's own dependencies do not name them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COORDINATOR_LIBRARIES = (
    "aiohttp",
    "cryptography",
    "psycopg",
    "psycopg_pool",
    "redis",
    "prometheus_client",
)


def loaded(code: str) -> list[str]:
    probe = (
        code
        + "\nimport sys\nprint(' '.join(m for m in "
        + repr(COORDINATOR_LIBRARIES)
        + " if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()


def test_the_agent_with_its_default_checks_loads_no_coordinator_library(tmp_path: Path) -> None:
    from shared.signing import generate_keypair

    _, public = generate_keypair(tmp_path / "keys")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'host = "web-1"\npublic_key_file = "{public}"\nstate_dir = "{tmp_path / "state"}"\n'
        '[checks.application]\nurl = "http://127.0.0.1:9/health"\n'
        f'[deploy]\nroot = "{tmp_path / "app"}"\n'
    )
    code = (
        "from shared.config import AgentConfig, load\n"
        "from agent.main import check_files\n"
        "from agent.app import Agent\n"
        "from agent.checks import build_checks\n"
        "import agent.executor, agent.signature, agent.watchdog, uvloop\n"
        f"config = load(AgentConfig, {str(config)!r})\n"
        f"check_files(config, {str(config)!r})\n"
        "assert {c.name for c in build_checks(config.checks)} >= {'cpu', 'memory', 'disk', "
        "'system', 'application'}\n"
    )
    assert loaded(code) == []


def test_the_cli_loads_no_coordinator_library() -> None:
    code = (
        "from coordinator.cli.main import build_parser\n"
        "import coordinator.cli.client, coordinator.cli.follow, coordinator.setup.install\n"
        "build_parser().parse_args(['hosts'])\n"
    )
    assert loaded(code) == []


def test_the_coordinators_libraries_are_an_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {
            r.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip()
            for r in requirements
        }

    base = names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert base.isdisjoint({"cryptography", "aiohttp", "prometheus-client", "psycopg", "redis"})
    assert "pynacl" in base
    assert {"cryptography", "aiohttp", "prometheus-client"} <= names(extras["coordinator"])
    assert names(extras["postgres"]) == {"psycopg"}
    assert names(extras["redis"]) == {"redis"}
    assert "rollguard[coordinator,postgres,redis]" in extras["dev"]
