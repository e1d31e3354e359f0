"""The CLI without a coordinator: an unreachable one, bad arguments, and ``config
check`` on every example config (and broken ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.devfleet.broker import free_port
from tests.cli.run import rollguard

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "deploy" / "examples").glob("*.toml"))


def test_unreachable_coordinator_is_exit_1(tmp_path: Path) -> None:
    token = tmp_path / "api.token"
    token.write_text("x" * 32)
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (["hosts"], ["status"], ["deploy", "2.0.0", "--wait"], ["report", "d1"]):
        result = rollguard(*argv, "--url", url, "--token-file", str(token))
        assert result.returncode == 1, (argv, result.stderr)
        assert f"cannot reach the coordinator at {url}" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["deploy"], "the following arguments are required: VERSION"),
        (["promote"], "the following arguments are required: ID"),
        (["deploy", "2.0.0", "--strategy", "yolo"], "invalid choice: 'yolo'"),
        (["deploy", "2.0.0", "--env", "qa"], "invalid choice: 'qa'"),
        (["deploy", "2.0.0", "--wait", "--timeout", "-3"], "must be more than 0"),
        (["report", "d1", "--format", "pdf"], "invalid choice: 'pdf'"),
        (["status", "--wait"], "status --wait needs a deployment ID"),
        (["hosts", "--url", "ftp://example.org"], "must be http(s)://HOST[:PORT]"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_are_exit_2(argv: list[str], message: str, tmp_path: Path) -> None:
    token = tmp_path / "api.token"
    token.write_text("x" * 32)
    result = rollguard(*argv, "--token-file", str(token))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_there_are_example_configs_of_both_kinds() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"agent.toml", "coordinator.toml", "coordinator-ha.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_config_passes_config_check(path: Path) -> None:
    # The files they name live on a real installation (tests/install checks those).
    result = rollguard("config", "check", "--syntax-only", str(path))
    assert result.returncode == 0, result.stderr
    kind = "agent" if path.name.startswith("agent") else "coordinator"
    assert result.stdout.strip() == f"{path}: valid {kind} config"


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        (
            "agent.toml",
            'host = "web-1"\nenvironment = "production"\n[mqtt]\nport = 70000\n',
            "Expected `int` <= 65535 - at `$.mqtt.port`",
        ),
        (
            "coordinator.toml",
            "[environments.production]\nerror_rate = 1.5\n",
            "Expected `float` < 1.0 - at `$.environments.production.error_rate`",
        ),
        (
            "coordinator.toml",
            "[environments.production.canary]\nfirst_bak = 60.0\n",
            "unknown field `first_bak` - at `$.environments.production.canary`",
        ),
        (
            "coordinator.toml",
            "[environments.production.canary]\nsteps = [50.0, 25.0, 100.0]\n",
            "steps must rise above initial_percent and each other",
        ),
        ("broken.toml", "[mqtt\nport = 1", "not valid TOML"),
    ],
)
def test_a_broken_config_names_the_key_and_exits_2(
    tmp_path: Path, name: str, text: str, named: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    result = rollguard("config", "check", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert named in result.stderr


def test_a_missing_config_is_exit_2(tmp_path: Path) -> None:
    result = rollguard("config", "check", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "cannot read config" in result.stderr
