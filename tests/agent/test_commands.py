"""Commands over the real broker: published with the coordinator's credential, verified,
executed at most once, answered on ``cmd/result``; the retained status follows."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.app import Agent
from shared import signing, topics
from shared.messages import Command, CommandResult, HostStatus, decode, encode
from shared.mqtt import make_client
from tests.agent.conftest import Listener, agent_config, listening
from tests.conftest import Broker

pytestmark = pytest.mark.integration
NO_CHECKS = {name: {"enabled": False} for name in ("cpu", "memory", "disk", "system")}


class Site:
    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "app"
        for version in ("1.0.0", "2.0.0"):
            (self.root / "releases" / version).mkdir(parents=True)
        os.symlink("releases/1.0.0", self.root / "current")
        self.log = tmp / "restarts.log"
        self.restart = tmp / "restart"
        self.restart.write_text(
            f'#!/bin/sh\necho "$1" >> {self.log}\n'
            'if [ "$1" = 2.0.0 ] && [ -e "$0.fail" ]; then echo "health check failed"; exit 1; fi\n'
            'echo "restarted $1"\n'
        )
        self.restart.chmod(self.restart.stat().st_mode | stat.S_IXUSR)

    def restarts(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Any, Path]:
    private_path, public_path = signing.generate_keypair(tmp_path / "keys")
    return signing.load_private_key(private_path), public_path


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def config_for(broker: Broker, tmp_path: Path, site: Site, public_key: Path | None) -> Any:
    """host-a without checks, deploying into ``site`` with its restart script."""
    return agent_config(
        state_dir=str(tmp_path / "state"),
        public_key_file=str(public_key) if public_key else None,
        mqtt=msgspec.to_builtins(broker.mqtt("host-a")),
        checks=NO_CHECKS,
        deploy={"root": str(site.root), "restart_command": [str(site.restart), "{version}"]},
    )


async def start_agent(config: Any) -> tuple[Agent, asyncio.Task[int]]:
    agent = Agent(config)
    task = asyncio.create_task(agent.run())
    return agent, task


@pytest.fixture
async def running_agent(
    broker: Broker, tmp_path: Path, keys: tuple[Any, Path], site: Site
) -> AsyncIterator[Agent]:
    config = config_for(broker, tmp_path, site, keys[1])
    agent, task = await start_agent(config)
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


def make_command(command_id: str, action: str = "deploy", **fields: Any) -> Command:
    now = time.time()
    values: dict[str, Any] = {
        "host": "host-a",
        "deployment": "dep-1",
        "issued": now,
        "expires": now + 60,
        "version": "2.0.0" if action == "deploy" else None,
    }
    values.update(fields)
    return Command(id=command_id, action=action, **values)  # type: ignore[arg-type]


async def send(broker: Broker, *payloads: bytes, host: str = "host-a") -> None:
    async with make_client(broker.coordinator(), identifier="test-coordinator") as client:
        for payload in payloads:
            await client.publish(topics.cmd(host), payload, qos=1)


def results(listener: Listener, command_id: str) -> list[CommandResult]:
    found = [decode(CommandResult, p) for p in listener.on(topics.cmd_result("host-a"))]
    return [r for r in found if r.id == command_id]


async def final(listener: Listener, command_id: str, count: int = 1) -> list[CommandResult]:
    """Wait for ``count`` non-accepted results of ``command_id``."""
    found: list[CommandResult] = await listener.wait(
        lambda: (
            (done := [r for r in results(listener, command_id) if r.state != "accepted"])
            and len(done) >= count
            and done
        ),
        within=15,
    )
    return found


async def connected(agent: Agent) -> None:
    async with asyncio.timeout(10):
        while not agent.publisher.connected:  # noqa: ASYNC110 - polling another object
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # subscribed


async def test_signed_deploy_then_replay_then_rollback(
    broker: Broker, running_agent: Agent, keys: tuple[Any, Path], site: Site
) -> None:
    key = keys[0]
    async with listening(broker.operator(), ["rollguard/v1/hosts/host-a/#"]) as seen:
        await connected(running_agent)
        deploy = signing.sign(make_command("deploy-0001"), key)
        await send(broker, encode(deploy))
        (done,) = await final(seen, "deploy-0001")
        states = [r.state for r in results(seen, "deploy-0001")]
        assert states == ["accepted", "succeeded"]
        assert done.version == "2.0.0"
        assert done.detail == "current -> releases/2.0.0; restart command ok: restarted 2.0.0"
        assert os.readlink(site.root / "current") == "releases/2.0.0"
        # The retained status now shows the new version.
        status = await seen.wait(
            lambda: [
                s
                for p in seen.on(topics.status("host-a"))
                if (s := decode(HostStatus, p)).version == "2.0.0" and s.online
            ]
        )
        assert status[-1].session == running_agent.publisher.session

        # The same command again (a retry, or a replay): the first result, nothing run.
        await send(broker, encode(deploy))
        second = await final(seen, "deploy-0001", count=2)
        assert second[1] == second[0]
        assert site.restarts() == ["2.0.0"]

        rollback = signing.sign(make_command("rollback-0001", "rollback"), key)
        await send(broker, encode(rollback))
        (back,) = await final(seen, "rollback-0001")
        assert back.state == "succeeded" and back.version == "1.0.0"
        assert os.readlink(site.root / "current") == "releases/1.0.0"
        assert site.restarts() == ["2.0.0", "1.0.0"]


async def test_failing_restart_is_reported_failed_with_its_output(
    broker: Broker, running_agent: Agent, keys: tuple[Any, Path], site: Site
) -> None:
    Path(str(site.restart) + ".fail").touch()  # noqa: ASYNC240 - test set-up
    async with listening(broker.operator(), [topics.cmd_result("host-a")]) as seen:
        await connected(running_agent)
        await send(broker, encode(signing.sign(make_command("deploy-0002"), keys[0])))
        (done,) = await final(seen, "deploy-0002")
        assert done.state == "failed"
        assert done.detail == (
            "current -> releases/2.0.0; restart command failed (exit 1): health check failed"
        )
        await send(broker, encode(signing.sign(make_command("rollback-02", "rollback"), keys[0])))
        (back,) = await final(seen, "rollback-02")
        assert back.state == "succeeded" and back.version == "1.0.0"


async def test_untrusted_commands_are_rejected_and_run_nothing(
    broker: Broker, running_agent: Agent, keys: tuple[Any, Path], site: Site, tmp_path: Path
) -> None:
    key = keys[0]
    other_key = signing.load_private_key(signing.generate_keypair(tmp_path / "other")[0])
    signed = signing.sign(make_command("tampered-1"), key)
    cases = {
        "unsigned-01": (encode(make_command("unsigned-01")), "command is unsigned"),
        "tampered-1": (
            encode(msgspec.structs.replace(signed, version="1.0.0")),
            "signature does not verify against the coordinator key",
        ),
        "foreign-key": (
            encode(signing.sign(make_command("foreign-key"), other_key)),
            "signature does not verify against the coordinator key",
        ),
        "expired-01": (
            encode(
                signing.sign(
                    make_command("expired-01", issued=time.time() - 120, expires=time.time() - 60),
                    key,
                )
            ),
            "expired ",
        ),
        "wrong-host": (
            encode(signing.sign(make_command("wrong-host", host="host-b"), key)),
            "command is for host host-b, this is host-a",
        ),
        "malformed1": (
            b'{"id": "malformed1", "action": "deploy", "unexpected": 1}',
            "malformed command: invalid Command: ",
        ),
    }
    async with listening(broker.operator(), [topics.cmd_result("host-a")]) as seen:
        await connected(running_agent)
        await send(broker, *(payload for payload, _ in cases.values()), b"not json at all")
        for command_id, (_, reason) in cases.items():
            (result,) = await final(seen, command_id)
            assert result.state == "rejected", command_id
            assert result.detail.startswith(reason), (command_id, result.detail)
            assert [r.state for r in results(seen, command_id)] == ["rejected"]
    assert site.restarts() == []
    assert os.readlink(site.root / "current") == "releases/1.0.0"
    assert running_agent.executor.rejected == len(cases) + 1  # and the undecodable one


async def test_an_id_reused_for_a_different_command_is_rejected(
    broker: Broker, running_agent: Agent, keys: tuple[Any, Path], site: Site
) -> None:
    key = keys[0]
    async with listening(broker.operator(), [topics.cmd_result("host-a")]) as seen:
        await connected(running_agent)
        await send(broker, encode(signing.sign(make_command("reused-01"), key)))
        await final(seen, "reused-01")
        other = signing.sign(make_command("reused-01", "rollback"), key)
        await send(broker, encode(other))
        second = await final(seen, "reused-01", count=2)
        assert second[1].state == "rejected"
        assert second[1].detail == "command id reused-01 was already used for a different command"
    assert site.restarts() == ["2.0.0"]


async def test_without_a_public_key_every_command_is_rejected(
    broker: Broker, tmp_path: Path, keys: tuple[Any, Path], site: Site
) -> None:
    config = config_for(broker, tmp_path, site, None)
    agent, task = await start_agent(config)
    try:
        async with listening(broker.operator(), [topics.cmd_result("host-a")]) as seen:
            await connected(agent)
            await send(broker, encode(signing.sign(make_command("nokey-001"), keys[0])))
            (result,) = await final(seen, "nokey-001")
            assert result.state == "rejected"
            assert result.detail.startswith("no public key configured")
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)
    assert site.restarts() == []


async def test_replay_is_answered_after_an_agent_restart_too(
    broker: Broker, tmp_path: Path, keys: tuple[Any, Path], site: Site
) -> None:
    config = config_for(broker, tmp_path, site, keys[1])
    deploy = encode(signing.sign(make_command("restart-01"), keys[0]))
    async with listening(broker.operator(), [topics.cmd_result("host-a")]) as seen:
        for _ in range(2):
            agent, task = await start_agent(config)
            try:
                await connected(agent)
                await send(broker, deploy)
                await final(seen, "restart-01", count=1 + _)
            finally:
                agent.stop()
                await asyncio.wait_for(task, 10)
        first, second = [r for r in results(seen, "restart-01") if r.state != "accepted"]
        assert first == second and first.state == "succeeded"
    assert site.restarts() == ["2.0.0"]


async def test_a_command_from_a_deposed_leader_is_rejected(
    broker: Broker, running_agent: Agent, keys: tuple[Any, Path], site: Site
) -> None:
    key = keys[0]
    async with listening(broker.operator(), [topics.cmd_result("host-a")]) as seen:
        await connected(running_agent)
        await send(broker, encode(signing.sign(make_command("fenced-05", fencing=5), key)))
        assert (await final(seen, "fenced-05"))[0].state == "succeeded"
        stale = make_command("fenced-03", "rollback", fencing=3)
        await send(broker, encode(signing.sign(stale, key)))
        (result,) = await final(seen, "fenced-03")
        assert result.state == "rejected"
        assert result.detail.startswith("stale fencing token 3 (already obeyed 5)")
    assert site.restarts() == ["2.0.0"]
