"""Config checks that catch what would only fail later: an empty file, a percent
written as a fraction, an agent config read as a coordinator's, the files a config
names, and a releases root the agent's unit does not let it write."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.main import check_files
from shared.config import AgentConfig, ConfigError, CoordinatorConfig, load, load_any, loads
from shared.config.files import coordinator_files, writable_paths
from shared.signing import generate_keypair

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "rollguard-agent.service"


def test_an_empty_file_is_not_a_config(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("\n  \n")
    with pytest.raises(ConfigError, match=r"empty\.toml: the file is empty"):
        load(AgentConfig, path)
    with pytest.raises(ConfigError, match=r"empty\.toml: the file is empty"):
        load(CoordinatorConfig, path)
    with pytest.raises(ConfigError, match="the file is empty"):
        load_any(path)


@pytest.mark.parametrize(
    "text",
    [
        "[environments.production]\nerror_rate = 0.5\n",
        "[environments.staging]\nerror_rate = 0.25\n",
        "[alerts]\nerror_rate = 0.3\n",
    ],
)
def test_an_error_rate_above_a_fifth_is_refused_as_a_percent(text: str) -> None:
    with pytest.raises(ConfigError, match=r"is a fraction of requests \(0\.01 is 1 %\)"):
        loads(CoordinatorConfig, text, source="c.toml")


def test_an_error_rate_of_a_fifth_is_accepted() -> None:
    config = loads(CoordinatorConfig, "[environments.production]\nerror_rate = 0.2\n")
    assert config.environments.production.error_rate == 0.2


def test_an_agent_config_without_host_says_it_was_read_as_a_coordinators(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('public_key_file = "/etc/rollguard/keys/coordinator.pub"\n[checks.cpu]\n')
    with pytest.raises(ConfigError) as info:
        load_any(path)
    message = str(info.value)
    assert "unknown field `public_key_file`" in message
    assert "no `host`: read as a coordinator config; is this an agent's?" in message


def agent(tmp_path: Path, **lines: str) -> AgentConfig:
    text = 'host = "web-1"\n' + "".join(f"{k} = {v}\n" for k, v in lines.items() if "." not in k)
    deploy = {k.split(".", 1)[1]: v for k, v in lines.items() if k.startswith("deploy.")}
    if deploy:
        text += "[deploy]\n" + "".join(f"{k} = {v}\n" for k, v in deploy.items())
    return loads(AgentConfig, text)


def test_an_agent_without_a_public_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="public_key_file is not set: every command"):
        check_files(agent(tmp_path), "a.toml", unit=None)


def test_the_default_releases_root_is_the_one_the_unit_lets_the_agent_write(
    tmp_path: Path,
) -> None:
    _, public = generate_keypair(tmp_path / "keys")
    config = agent(tmp_path, public_key_file=f'"{public}"')
    assert config.deploy.root == "/srv/app"
    assert writable_paths(UNIT.read_text()) == ["/srv/app"]
    check_files(config, "a.toml", unit=str(UNIT))
    elsewhere = agent(tmp_path, public_key_file=f'"{public}"', **{"deploy.root": '"/opt/app"'})
    with pytest.raises(ConfigError, match=r"deploy.root /opt/app: the unit .* only /srv/app"):
        check_files(elsewhere, "a.toml", unit=str(UNIT))
    # Without an installed unit the root is only checked for being writable.
    check_files(elsewhere, "a.toml", unit=str(tmp_path / "no.service"))


def test_writable_paths_follow_systemd_list_semantics() -> None:
    text = "ReadWritePaths=-/srv/app /var/x\nReadWritePaths=\nReadWritePaths=+/data\n"
    assert writable_paths(text) == ["/data"]


def test_the_coordinators_files_are_checked(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("short\n")
    config = loads(
        CoordinatorConfig,
        f'private_key_file = "{tmp_path / "nope.key"}"\n',
    )
    with pytest.raises(ConfigError, match=r"private_key_file .*nope.key: No such file"):
        coordinator_files(config)
    config = loads(CoordinatorConfig, f'[http]\ntoken_file = "{token}"\n')
    with pytest.raises(ConfigError, match="at least 16 characters"):
        coordinator_files(config)
    config = loads(
        CoordinatorConfig,
        f'[mqtt]\nusername = "_coordinator"\npassword_file = "{tmp_path / "pw"}"\n',
    )
    with pytest.raises(ConfigError, match=r"mqtt.password_file .*pw: No such file"):
        coordinator_files(config)


def test_a_check_whose_driver_is_not_installed_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    _, public = generate_keypair(tmp_path / "keys")
    config = loads(
        AgentConfig,
        f'host = "web-1"\npublic_key_file = "{public}"\n'
        '[checks.database]\nurl = "postgresql://db/app"\n',
    )
    check_files(config, "a.toml", unit=None)  # psycopg is installed here
    # A host installed without the extra: the driver is not there.
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "psycopg" else real(name)
    )
    with pytest.raises(ConfigError, match=r"pip install 'rollguard\[postgres\]'"):
        check_files(config, "a.toml", unit=None)
