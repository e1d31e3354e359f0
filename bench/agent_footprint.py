#!/usr/bin/env python3
"""Agent footprint: peak resident memory and CPU per collection cycle, one JSON line.

Runs the real ``rollguard-agent`` process against a private Mosquitto (the project's
config, real auth) and a local HTTP app, with the default checks of a host (cpu,
memory, disk, system, network, application with 5 probes) and a public key loaded.

* cycle phase: every check at the same compressed interval; a cycle is one run of
  each check (counted by the application samples reaching an operator subscriber).
  ``linger`` is 0, so runs go out as separate batches, as they do at the guide's
  unaligned intervals. CPU is the sum over the agent's threads (schedstat, ns).
* idle phase: the same agent with hour-long intervals, under the unit's watchdog
  (WatchdogSec=120: a ping every 60 s to a notify socket) and the default MQTT
  keepalive (30 s), watched for two keepalives: the cost of merely running, per second,
  and how often it wakes up (context switches of all its threads, per minute).

Derived share of one core at the guide's intervals (cpu, memory, system 60 s, disk
300 s, network 30 s, application 10 s):
``core_share_pct`` = idle rate + the work of one check run x runs per second, a check
run costing the cycle's work divided by the number of checks;
``core_share_pct_upper`` = idle rate + a whole cycle every 10 s (every check as often
as the most frequent one): a bound that needs no assumption about the split.
Targets (design section 6): ``peak_rss_mb`` <= 35, share <= 0.1 %.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiomqtt import MqttError  # noqa: E402

from coordinator.devfleet.broker import LocalBroker, free_port  # noqa: E402
from shared import topics  # noqa: E402
from shared.config.common import MqttConfig  # noqa: E402
from shared.mqtt import make_client  # noqa: E402

HOST = "bench-agent"
CYCLE_INTERVAL = 0.5
WARMUP_CYCLES = 6
CYCLES = 80
IDLE_SECONDS = 65.0
# The shipped unit's WatchdogSec (deploy/rollguard-agent.service).
WATCHDOG_USEC = 120_000_000
GUIDE_INTERVALS = {
    "cpu": 60,
    "memory": 60,
    "system": 60,
    "disk": 300,
    "network": 30,
    "application": 10,
}
TARGET_RSS_MB = 35.0
TARGET_SHARE_PCT = 0.1


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def agent_config(tmp: Path, broker: LocalBroker, app_port: int, interval: float) -> Path:
    from shared.signing import generate_keypair

    keys = tmp / "keys"
    if not keys.exists():
        generate_keypair(keys)
    timeout = min(interval, 5.0)
    path = tmp / f"agent-{interval:g}.toml"
    path.write_text(
        f'host = "{HOST}"\nenvironment = "production"\n'
        f'state_dir = "{tmp / "state"}"\npublic_key_file = "{keys / "coordinator.pub"}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nusername = "{HOST}"\n'
        f'password_file = "{broker.password_file(HOST)}"\n'
        '[log]\nlevel = "warning"\n'
        "[publish]\nlinger = 0.0\n"
        "[checks]\njitter = 0.0\n"
        + "".join(
            f"[checks.{name}]\ninterval = {interval}\ntimeout = {timeout}\n"
            for name in ("cpu", "memory", "disk", "system")
        )
        + f"[checks.network]\ninterval = {interval}\ntimeout = {timeout}\n"
        f'endpoints = ["127.0.0.1:{broker.port}", "127.0.0.1:{app_port}"]\n'
        f"[checks.application]\ninterval = {interval}\ntimeout = {timeout}\n"
        f'url = "http://127.0.0.1:{app_port}/health"\n',
        encoding="utf-8",
    )
    return path


def cpu_ns(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except OSError:
            pass  # a thread that just ended
    return total


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class Counter:
    """Counts application samples arriving for the agent, from the operator's view."""

    def __init__(self, broker: LocalBroker) -> None:
        self.broker = broker
        self.count = 0
        self.ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("operator subscriber did not connect")

    async def _run(self) -> None:
        cfg = MqttConfig(
            host="127.0.0.1",
            port=self.broker.port,
            username="_operator",
            password_file=str(self.broker.password_file("_operator")),
        )
        try:
            async with make_client(cfg, identifier="bench-operator") as client:
                await client.subscribe(topics.metrics(HOST), qos=1)
                self.ready.set()
                async for message in client.messages:
                    payload = message.payload
                    assert isinstance(payload, bytes)
                    self.count += payload.count(b'"check":"application"')
        except MqttError:
            pass  # the broker stopped at the end of the run

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.count} of {count} cycles arrived")
            time.sleep(0.02)


def start_agent(
    config: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    binary = Path(sys.executable).parent / "rollguard-agent"
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(binary), "--config", str(config)],
            stdout=out,
            stderr=out,
            env={**os.environ, **(env or {})},
        )


def switches(pid: int) -> int:
    """Context switches of every thread so far: each wake-up is at least one."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as fh:
                for line in fh:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass  # a thread that just ended
    return total


def stop_agent(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="rg-bench-") as name:
        tmp = Path(name)
        broker = LocalBroker(tmp / "broker", [HOST])
        broker.start()
        app = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Health)
        threading.Thread(target=app.serve_forever, daemon=True).start()
        try:
            counter = Counter(broker)
            # Cycle phase.
            agent = start_agent(
                agent_config(tmp, broker, app.server_port, CYCLE_INTERVAL), tmp / "agent.log"
            )
            try:
                counter.wait_for(WARMUP_CYCLES, 30)
                start_count, start_cpu = counter.count, cpu_ns(agent.pid)
                start_at = time.monotonic()
                counter.wait_for(start_count + CYCLES, CYCLES * CYCLE_INTERVAL * 3 + 10)
                end_count, end_cpu, end_at = counter.count, cpu_ns(agent.pid), time.monotonic()
                peak_rss_kb = status_kb(agent.pid, "VmHWM")
                rss_kb = status_kb(agent.pid, "VmRSS")
            finally:
                stop_agent(agent)
            # Idle phase: the same agent, checks due once an hour (after a first round).
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(str(tmp / "notify"))
            idle = start_agent(
                agent_config(tmp, broker, app.server_port, 3600.0),
                tmp / "agent-idle.log",
                env={"NOTIFY_SOCKET": str(tmp / "notify"), "WATCHDOG_USEC": str(WATCHDOG_USEC)},
            )
            try:
                time.sleep(3.0)  # start-up and the first round are not idling
                idle_cpu0, idle_t0 = cpu_ns(idle.pid), time.monotonic()
                idle_sw0 = switches(idle.pid)
                time.sleep(IDLE_SECONDS)
                idle_cpu1, idle_t1 = cpu_ns(idle.pid), time.monotonic()
                idle_sw1 = switches(idle.pid)
            finally:
                stop_agent(idle)
                notify.close()
        finally:
            app.shutdown()
            broker.stop()
    cycles = end_count - start_count
    wall = end_at - start_at
    idle_rate = (idle_cpu1 - idle_cpu0) / 1e9 / (idle_t1 - idle_t0)
    cpu_per_cycle = (end_cpu - start_cpu) / 1e9 / cycles
    work_per_cycle = max(0.0, cpu_per_cycle - idle_rate * wall / cycles)
    per_run = work_per_cycle / len(GUIDE_INTERVALS)
    share = idle_rate + per_run * sum(1 / i for i in GUIDE_INTERVALS.values())
    upper = idle_rate + work_per_cycle / min(GUIDE_INTERVALS.values())
    result = {
        "bench": "agent_footprint",
        "checks": sorted(GUIDE_INTERVALS),
        "cycles": cycles,
        "peak_rss_mb": round(peak_rss_kb / 1024, 1),
        "rss_mb": round(rss_kb / 1024, 1),
        "cpu_s_per_cycle": round(cpu_per_cycle, 5),
        "idle_cpu_s_per_s": round(idle_rate, 6),
        "idle_wakeups_per_min": round((idle_sw1 - idle_sw0) * 60 / (idle_t1 - idle_t0), 1),
        "core_share_pct": round(share * 100, 4),
        "core_share_pct_upper": round(upper * 100, 4),
        "target_rss_mb": TARGET_RSS_MB,
        "target_share_pct": TARGET_SHARE_PCT,
        "ok": peak_rss_kb / 1024 <= TARGET_RSS_MB and upper * 100 <= TARGET_SHARE_PCT,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
