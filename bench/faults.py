#!/usr/bin/env python3
"""Faults during a canary rollout of a good release, on the development fleet: one JSON line.

The real broker, coordinator, six agents and demo app (``DevFleet``) roll 2.0.0 (a
healthy release) out by canary. While it runs, in this order:

1. the broker is stopped and started again mid-bake (``broker_restart``);
2. the coordinator is SIGKILLed mid-step and started again (``coordinator_kill``);
3. a canary agent is stopped (SIGSTOP) for a few seconds, less than the missing-data
   grace, and continued (``agent_stop``);
4. another host's credential connects, again and again, with the client id of a canary
   agent and of the coordinator (``takeover``);
5. the broker is stopped while a step's commands are being carried out, for longer than
   the ack timeout, and started again (``broker_outage_mid_step``).

Each host's restart takes ``RESTART`` seconds, so that a step's commands are in flight
for a while (when the coordinator is killed, when the broker goes).

Reported:

* ``batches_published`` (what the agents sealed, from their stores after a graceful
  stop) against ``batches_delivered`` (distinct host/seq seen by a witness: a reader
  with a persistent session of its own at the broker, as the coordinator's) and
  ``batches_kept_by_agents`` (still on an agent's disk when it stopped, sent at its next
  start), with ``batches_lost`` (neither; target 0) and ``duplicate_deliveries``
  (QoS 1 is at least once; the engine drops repeats by session and seq);
  ``samples_delivered``;
* ``executions_per_host``: how often each host ran the deploy's restart (target: 1);
* ``false_decisions``: rollbacks, failures and holds that waited for a person, of the
  good release (target: 0), and its final state; ``holds``: every hold with its reason,
  hosts and how soon it cleared by itself (a canary agent stopped for longer than three
  of its check intervals is missing data, and the bake waits for it);
* ``takeover``: connections made with a stolen client id, and how many times the
  victims' sessions changed (target: 0 displaced).

``--hosts N`` (default 6). Takes about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402

from agent.store import Store  # noqa: E402
from coordinator.devfleet.fleet import FAST_POLICY, DevFleet, wait_for  # noqa: E402
from coordinator.setup.credentials import reader_user  # noqa: E402
from shared import topics  # noqa: E402
from shared.config.common import MqttConfig  # noqa: E402
from shared.errors import MessageError  # noqa: E402
from shared.kinds import EventKind  # noqa: E402
from shared.messages import MetricBatch, decode  # noqa: E402
from shared.mqtt import make_client  # noqa: E402

GOOD = "2.0.0"
WITNESS = reader_user("faults-witness")
BROKER_DOWN = 3.0
AGENT_STOPPED = 4.0
TAKEOVER_FOR = 5.0
TAKEOVER_EVERY = 0.5
RESTART = 2.0
# Longer than the development fleet's ack timeout.
OUTAGE = float(FAST_POLICY["ack_timeout"]) + 5.0
FALSE_KINDS = {
    EventKind.DEPLOYMENT_FAIL,
    EventKind.DEPLOYMENT_ROLLBACK,
    EventKind.DEPLOYMENT_ROLLBACK_DONE,
    EventKind.DEPLOYMENT_ROLLBACK_FAILED,
}


def holds(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every hold: its reason and hosts, and how long until it cleared by itself (None:
    it waited for a person, a false decision)."""
    found: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        if event["kind"] != EventKind.DEPLOYMENT_HOLD:
            continue
        cleared = next(
            (e for e in events[index + 1 :] if e["kind"] == EventKind.DEPLOYMENT_CLEARED), None
        )
        evidence = event["evidence"]
        found.append(
            {
                "reason": evidence.get("reason"),
                "hosts": sorted(evidence.get("missing") or evidence.get("unreachable") or []),
                "cleared_after_s": round(cleared["time"] - event["time"], 2) if cleared else None,
            }
        )
    return found


FINISHED = {"completed", "rolled_back", "failed", "cancelled"}


def mqtt(fleet: DevFleet, user: str) -> MqttConfig:
    return MqttConfig(
        host="127.0.0.1",
        port=fleet.broker.port,
        username=user,
        password_file=str(fleet.broker.password_file(user)),
        keepalive=5,
        reconnect_min=0.1,
        reconnect_max=1.0,
    )


class Witness:
    """Every metrics batch the broker delivers, by (host, seq), on a session of its own
    that outlives broker restarts (persistence) like the coordinator's."""

    def __init__(self, fleet: DevFleet) -> None:
        self.config = mqtt(fleet, WITNESS)
        self.deliveries: Counter[tuple[str, int]] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        """Start and return once subscribed: every batch from then on is seen."""
        self._thread.start()
        if not self._subscribed.wait(30):
            raise TimeoutError("the witness could not subscribe")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client = make_client(self.config, identifier=WITNESS, session_expiry=600)
                async with client:
                    await client.subscribe(topics.ALL_METRICS, qos=1, timeout=10)
                    self._subscribed.set()
                    async for message in client.messages:
                        self._count(bytes(message.payload))
                        if self._stop.is_set():
                            return
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    def _count(self, payload: bytes) -> None:
        try:
            batch = decode(MetricBatch, payload)
        except MessageError:
            return  # only the agents' own batches count
        if self.deliveries[(batch.host, batch.seq)] == 0:
            self.samples += len(batch.samples)
        self.deliveries[(batch.host, batch.seq)] += 1


def sessions(fleet: DevFleet) -> dict[str, int]:
    return {h["host"]: h["session"] for h in fleet.api.get("/api/v1/hosts")["hosts"]}


async def takeover(fleet: DevFleet, thief: str, victims: list[str], until: float) -> int:
    """Connect with the thief's credential under each victim's client id until ``until``."""
    attempts = 0
    config = mqtt(fleet, thief)
    while time.monotonic() < until:
        for victim in victims:
            try:
                async with make_client(config, identifier=victim):
                    attempts += 1
            except aiomqtt.MqttError:
                pass
        await asyncio.sleep(TAKEOVER_EVERY)
    return attempts


def deployment(fleet: DevFleet, ident: str) -> dict[str, Any]:
    return fleet.deployment(ident)


def canary_hosts(fleet: DevFleet, ident: str) -> list[str]:
    dep = deployment(fleet, ident)
    commands = dep.get("commands", {}).values()
    return sorted({c["host"] for c in commands if c["step"] <= dep["step"]})


def wait_baking(fleet: DevFleet, ident: str, step: int, timeout: float = 90) -> dict[str, Any]:
    result: dict[str, Any] = wait_for(
        lambda: (
            (d := deployment(fleet, ident))["step"] >= step
            and (d["state"] == "baking" or d["state"] in FINISHED)
            and d
        ),
        timeout,
        f"step {step} baking",
        interval=0.2,
    )
    return result


def sealed(fleet: DevFleet, host: str) -> tuple[int, set[int]]:
    """What the (stopped) agent sealed: its last sequence number, and the batches it
    still keeps on disk to send at its next start (a backlog it had not flushed yet)."""
    store = Store.open(fleet.directory / "agents" / host)
    try:
        kept = {int(seq) for (seq,) in store._db.execute("SELECT seq FROM batches")}
        return store._int("next_seq", 1) - 1, kept
    finally:
        store.close()


def accounted(fleet: DevFleet, hosts: list[str], witness: Witness) -> tuple[int, int, int]:
    """(sealed, kept by the agents, lost): a batch is lost when it was sealed and neither
    delivered nor kept."""
    total = kept_total = lost = 0
    for host in hosts:
        last, kept = sealed(fleet, host)
        total += last
        kept_total += len(kept)
        lost += sum(
            1
            for seq in range(1, last + 1)
            if seq not in kept and (host, seq) not in witness.deliveries
        )
    return total, kept_total, lost


_EXECUTING = re.compile(r"executing (\w+) (\S*) for deployment (\S+) \(command ([^)]+)\)")


def executed_commands(fleet: DevFleet, host: str) -> list[str]:
    """The ids of the commands the host's agent started, from its log (across restarts)."""
    path = fleet.directory / "logs" / f"{host}.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            message = json.loads(line)["message"]
        except (ValueError, KeyError, TypeError):
            continue
        if match := _EXECUTING.search(message):
            out.append(match.group(4))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/faults", description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=6)
    args = parser.parse_args()
    hosts = [f"web-{i}" for i in range(1, args.hosts + 1)]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rollguard-faults-") as tmp:
        directory = Path(tmp) / "fleet"
        (directory / "runs").mkdir(parents=True)
        # Every deploy a host carries out leaves a line: its restart command's record.
        record = f"sleep {RESTART:g}; echo {{deployment}} {{version}} >> {directory}/runs/{{host}}"
        fleet = DevFleet(
            directory,
            hosts,
            agent_extra={"deploy": {"restart_command": ["/bin/sh", "-c", record]}},
        )
        fleet.broker.services.append(WITNESS)
        witness = Witness(fleet)
        result: dict[str, Any] = {"bench": "faults", "hosts": len(hosts)}
        faults: dict[str, Any] = {}
        try:
            fleet.start(before_agents=witness.start)
            fleet.wait_ready(60)
            ident = fleet.deploy(GOOD)["id"]

            # 1. The broker restarted mid-bake.
            wait_baking(fleet, ident, 0)
            fleet.broker.stop()
            time.sleep(BROKER_DOWN)
            fleet.broker.start()
            faults["broker_restart"] = {"down_s": BROKER_DOWN}

            # 2. The coordinator SIGKILLed mid-step (the next step's commands out).
            wait_for(lambda: deployment(fleet, ident)["step"] >= 1, 90, "step 1", 0.1)
            fleet.kill("coordinator", signal.SIGKILL)
            fleet.start_coordinator()
            faults["coordinator_kill"] = {"at_step": 1}

            # 3. A canary agent stopped and continued during a bake.
            dep = wait_baking(fleet, ident, 1)
            canaries = canary_hosts(fleet, ident) or hosts[:1]
            stopped = canaries[-1]
            fleet.processes[stopped].send_signal(signal.SIGSTOP)
            time.sleep(AGENT_STOPPED)
            fleet.processes[stopped].send_signal(signal.SIGCONT)
            faults["agent_stop"] = {"host": stopped, "stopped_s": AGENT_STOPPED}

            # 4. Client-id takeover: another host's credential, a canary's and the
            # coordinator's client ids.
            before = sessions(fleet)
            victims = [canaries[0], "_coordinator-demo", f"rollguard-agent-{canaries[0]}"]
            thief = next((h for h in hosts if h not in canaries), hosts[-1])
            attempts = asyncio.run(takeover(fleet, thief, victims, time.monotonic() + TAKEOVER_FOR))
            after = sessions(fleet)
            displaced = sum(1 for h in before if h != thief and after.get(h) != before[h])
            faults["takeover"] = {"attempts": attempts, "displaced": displaced}
            del dep

            # 5. The broker away for longer than the ack timeout while the next step's
            # commands are carried out.
            wait_for(lambda: deployment(fleet, ident)["step"] >= 2, 120, "step 2", 0.05)
            fleet.broker.stop()
            time.sleep(OUTAGE)
            fleet.broker.start()
            faults["broker_outage_mid_step"] = {"down_s": OUTAGE, "at_step": 2}

            final = fleet.wait_state(ident, {*FINISHED, "held"}, 240)
            events = fleet.api.get(f"/api/v1/deployments/{ident}/events")["events"]
            false = [e["kind"] for e in events if e["kind"] in FALSE_KINDS]
            held = holds(events)
            false += [EventKind.DEPLOYMENT_HOLD for h in held if h["cleared_after_s"] is None]
            result["holds"] = held
            if final["state"] != "completed" and not false:
                false.append(final["state"])

            # Stop the agents gracefully (they flush), then count.
            for host in hosts:
                fleet.kill(host, signal.SIGTERM)
            time.sleep(3.0)
            wait_for(
                lambda: accounted(fleet, hosts, witness)[2] == 0,
                30,
                "the witness to see every batch not kept by its agent",
                0.5,
            )
        except TimeoutError as exc:
            result["error"] = str(exc)
            final = {"state": "unknown"}
            false = []
        finally:
            witness.stop()
            fleet.stop()
        delivered = len(witness.deliveries)
        total, kept, lost = (
            accounted(fleet, hosts, witness) if (fleet.directory / "agents").exists() else (0, 0, 0)
        )
        runs_dir = fleet.directory / "runs"
        executions = {
            h: len((runs_dir / h).read_text().splitlines()) if (runs_dir / h).exists() else 0
            for h in hosts
        }
        commands = {h: executed_commands(fleet, h) for h in hosts}
        result.update(
            {
                "commands_executed_per_host": {h: len(c) for h, c in commands.items()},
                "commands_executed_twice": sorted(
                    h for h, c in commands.items() if len(set(c)) != len(c)
                ),
                "faults": faults,
                "batches_published": total,
                "batches_delivered": delivered,
                "batches_kept_by_agents": kept,
                "batches_lost": lost,
                "duplicate_deliveries": sum(witness.deliveries.values()) - delivered,
                "samples_delivered": witness.samples,
                "executions_per_host": executions,
                "hosts_not_executed_once": sorted(h for h, n in executions.items() if n != 1),
                "final_state": final["state"],
                "false_decisions": len(false),
                "false_decision_kinds": false,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
