"""`rollguard setup`: files owned and moded for the user that reads them, nothing
changed on a second run, a dry run that changes nothing, and refusals before anything
is written (a missing user, a missing source file, a bad host id)."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from coordinator.setup import install
from tests.cli.run import rollguard


def owner(path: Path) -> tuple[str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, stat.S_IMODE(st.st_mode)


@pytest.fixture
def root_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("setting owners needs root (tests/install/test_rehearsal runs it in CI)")


# `nobody` stands in for the daemons' users: every Debian system has it.
DAEMON = "nobody"


def test_broker_files_are_readable_by_the_broker_user_and_a_rerun_changes_nothing(
    tmp_path: Path, root_user: None
) -> None:
    directory = tmp_path / "broker"
    lines: list[str] = []
    install.run(
        install.broker_plan(directory, ["web-1"], user=DAEMON), dry_run=True, echo=lines.append
    )
    assert not directory.exists()
    assert "would create broker passwords in" in "\n".join(lines)
    install.run(
        install.broker_plan(directory, ["web-1"], user=DAEMON), dry_run=False, echo=lines.append
    )
    group = install.Owner.of(DAEMON).group
    for name in ("passwd", "acl"):
        st = (directory / name).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o640)
        assert st.st_gid == install.Owner("root", group).ids()[1]
    assert owner(directory / "web-1.password") == ("root", 0o600)
    assert (directory / "acl").read_bytes() == install.packaged_acl()
    again: list[str] = []
    assert (
        install.run(
            install.broker_plan(directory, ["web-1"], user=DAEMON), dry_run=False, echo=again.append
        )
        == 0
    )
    assert again == ["nothing to change: already set up"]
    # A file someone loosened is put back.
    (directory / "passwd").chmod(0o644)
    fixed: list[str] = []
    install.run(
        install.broker_plan(directory, ["web-1"], user=DAEMON), dry_run=False, echo=fixed.append
    )
    assert fixed == [f"chmod 0640 {directory / 'passwd'}"]


def test_coordinator_and_agent_files(tmp_path: Path, root_user: None) -> None:
    broker = tmp_path / "broker"
    install.run(
        install.broker_plan(broker, ["web-1"], user=DAEMON), dry_run=False, echo=lambda _: None
    )
    config, state = tmp_path / "etc", tmp_path / "state"
    plan = install.coordinator_plan(
        config, state, user=DAEMON, mqtt_password=broker / "_coordinator.password"
    )
    install.run(plan, dry_run=False, echo=lambda _: None)
    assert owner(config / "keys" / "coordinator.key") == (DAEMON, 0o600)
    assert owner(config / "keys" / "coordinator.pub") == ("root", 0o644)
    assert owner(config / "_coordinator.password") == (DAEMON, 0o600)
    assert owner(state) == (DAEMON, 0o750)
    assert owner(state / "api.token") == (DAEMON, 0o640)
    token = (state / "api.token").read_text()
    key = (config / "keys" / "coordinator.key").read_bytes()
    assert (
        install.run(
            install.coordinator_plan(
                config, state, user=DAEMON, mqtt_password=broker / "_coordinator.password"
            ),
            dry_run=False,
            echo=lambda _: None,
        )
        == 0
    )
    # Kept, not regenerated: agents trust this key, operators hold this token.
    assert (state / "api.token").read_text() == token
    assert (config / "keys" / "coordinator.key").read_bytes() == key

    host = tmp_path / "host"
    plan = install.agent_plan(
        "web-1",
        host / "etc",
        state_dir=host / "state",
        deploy_root=host / "srv",
        user=DAEMON,
        mqtt_password=broker / "web-1.password",
        public_key=config / "keys" / "coordinator.pub",
    )
    install.run(plan, dry_run=False, echo=lambda _: None)
    assert owner(host / "etc" / "web-1.password") == ("root", 0o640)
    assert owner(host / "etc" / "keys" / "coordinator.pub") == ("root", 0o644)
    assert owner(host / "state") == (DAEMON, 0o700)
    assert owner(host / "srv") == (DAEMON, 0o755)


def test_refusals_come_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(install.SetupError, match="no user `no-such-user-rg`: create it first"):
        install.coordinator_plan(tmp_path / "etc", tmp_path / "state", user="no-such-user-rg")
    with pytest.raises(install.SetupError, match=r"--mqtt-password .*: no such file"):
        install.agent_plan(
            "web-1",
            tmp_path / "etc",
            state_dir=tmp_path / "s",
            deploy_root=tmp_path / "r",
            user=pwd.getpwuid(os.getuid()).pw_name,
            mqtt_password=tmp_path / "nope",
        )
    with pytest.raises(install.SetupError, match="does not exist yet: pass --public-key"):
        (tmp_path / "pw").write_text("x\n")
        install.agent_plan(
            "web-1",
            tmp_path / "etc",
            state_dir=tmp_path / "s",
            deploy_root=tmp_path / "r",
            user=pwd.getpwuid(os.getuid()).pw_name,
            mqtt_password=tmp_path / "pw",
        )
    assert not (tmp_path / "etc").exists()
    result = rollguard("setup", "broker", "--dir", str(tmp_path / "b"), "Not A Host")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()
