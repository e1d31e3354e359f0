from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import AgentConfig, ConfigError, CoordinatorConfig, load, loads


def test_coordinator_defaults_are_the_guides_numbers() -> None:
    config = loads(CoordinatorConfig, "")
    dev, stg, prod = (config.environments.get(e) for e in ("development", "staging", "production"))
    assert (dev.strategy, dev.error_rate, dev.log_level) == ("direct", None, "debug")
    assert (stg.strategy, stg.error_rate, stg.log_level) == ("blue-green", 0.05, "info")
    assert (prod.strategy, prod.error_rate, prod.log_level) == ("canary", 0.01, "warning")
    assert (prod.latency_ms, prod.cpu_percent, prod.memory_percent, prod.disk_percent) == (
        1000.0,
        80.0,
        90.0,
        90.0,
    )
    assert prod.canary.initial_percent == 10.0
    assert prod.canary.steps == [25.0, 50.0, 100.0]
    assert (prod.canary.first_bake, prod.canary.step_bake, prod.canary.post_watch) == (
        3600.0,
        900.0,
        3600.0,
    )
    assert prod.health_consecutive_failures == 3
    assert config.http.port == 8470


def test_agent_defaults_are_the_guides_intervals() -> None:
    config = loads(
        AgentConfig,
        'host = "web-1"\n[checks.database]\nurl = "postgresql://x"\n'
        '[checks.network]\nendpoints = ["db:5432"]\n[checks.application]\n'
        '[checks.cache]\nurl = "redis://x"\n',
    )
    checks = config.checks
    assert (checks.cpu.interval, checks.memory.interval, checks.disk.interval) == (
        60.0,
        60.0,
        300.0,
    )
    assert checks.database is not None and (checks.database.interval, checks.database.timeout) == (
        30.0,
        5.0,
    )
    assert checks.network is not None and (checks.network.interval, checks.network.timeout) == (
        30.0,
        5.0,
    )
    assert checks.application is not None and checks.application.url.startswith(
        "http://127.0.0.1:3000"
    )
    assert checks.cache is not None and checks.cache.interval == 60.0


def test_partial_environment_table_keeps_that_environments_defaults() -> None:
    config = loads(CoordinatorConfig, "[environments.staging]\nlatency_ms = 500\n")
    assert config.environments.staging.strategy == "blue-green"
    assert config.environments.staging.error_rate == 0.05
    assert config.environments.staging.latency_ms == 500.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[mqtt]\nport = 70000\n", "cfg.toml: Expected `int` <= 65535 - at `$.mqtt.port`"),
        ("[mqtt]\nprot = 1\n", "cfg.toml: Object contains unknown field `prot` - at `$.mqtt`"),
        (
            '[mqtt]\nusername = "x"\n',
            "username and password_file must be given together - at `$.mqtt`",
        ),
        ("[environments.production.canary]\nsteps = [25, 50]\n", "steps must end at 100"),
        (
            "[environments.production]\nerror_rate = 2\n",
            "at `$.environments.production.error_rate`",
        ),
        ('[store]\nurl = "mysql://x"\n', "at `$.store`"),
        (
            "[environments.staging]\nack_timeout = 45\noffline_grace = 45\n",
            "offline_grace (45 s) must be below ack_timeout (45 s): a host that died would "
            "fail its step first - at `$.environments.staging`",
        ),
        ("node = \n", "cfg.toml: not valid TOML"),
    ],
)
def test_coordinator_errors_name_file_key_and_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads(CoordinatorConfig, text, source="cfg.toml")
    assert message in str(info.value)


def test_the_offline_grace_defaults_below_the_ack_timeout() -> None:
    config = loads(
        CoordinatorConfig,
        "[environments.development]\nack_timeout = 20\n"
        "[environments.staging]\noffline_grace = 90\n",
    )
    assert config.environments.production.offline_after == 60.0
    assert config.environments.development.offline_after == 10.0
    assert config.environments.staging.offline_after == 90.0


def test_agent_host_id_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"a\.toml: .* - at `\$\.host`"):
        loads(AgentConfig, 'host = "Web 1"\n', source="a.toml")
    with pytest.raises(ConfigError, match="Object missing required field `host`"):
        loads(AgentConfig, "")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load(CoordinatorConfig, tmp_path / "nope.toml")


def test_password_is_read_from_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    config = loads(AgentConfig, f'host = "a"\n[mqtt]\nusername = "a"\npassword_file = "{secret}"\n')
    assert config.mqtt.read_password() == "s3cret"
    secret.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        config.mqtt.read_password()
