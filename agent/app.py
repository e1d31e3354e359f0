"""The agent assembled: checks -> runner -> batcher -> store -> publisher, and the
executor answering commands; started, watched by systemd, and stopped within 5 s."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from agent.batcher import Batcher
from agent.checks import build_checks
from agent.deploy import Deployer
from agent.executor import Executor
from agent.publisher import Publisher
from agent.runner import Runner
from agent.signature import load_public_key
from agent.store import Store
from agent.watchdog import Heartbeat, Notifier
from shared.config.agent import AgentConfig

log = logging.getLogger(__name__)
# From the stop request to a closed connection; systemd's TimeoutStopSec is above it.
SHUTDOWN_BUDGET: Final = 4.0
# The collection loop beats at least every 5 s; the MQTT loop at least once per
# connect attempt (backoff up to reconnect_max, plus the connect timeout) or every
# 5 s while connected.
COLLECT_STALE: Final = 20.0


class Agent:
    def __init__(self, config: AgentConfig, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier(env={})
        public_key = load_public_key(config.public_key_file) if config.public_key_file else None
        if public_key is None:
            log.warning("no public_key_file configured: every command will be rejected")
        self.store = Store.open(config.state_dir)
        self.heartbeat = Heartbeat()
        self.deployer = Deployer(config.deploy, host=config.host, store=self.store)
        self.publisher = Publisher(
            config,
            self.store,
            heartbeat=self.heartbeat,
            active=lambda: (self.deployer.current.version, self.deployer.current.slot),
            on_command=self._on_command,
        )
        self.executor = Executor(
            host=config.host,
            store=self.store,
            deployer=self.deployer,
            public_key=public_key,
            on_result=self.publisher.wake,
            on_state_change=self.publisher.status_changed,
        )
        self.batcher = Batcher(
            host=config.host,
            store=self.store,
            max_batches=config.buffer.max_batches,
            linger=config.publish.linger,
            session=lambda: self.publisher.session,
            on_sealed=self.publisher.wake,
        )
        self.checks = build_checks(config.checks, active_slot=lambda: self.deployer.current.slot)
        self.runner = Runner(
            self.checks,
            self.batcher,
            jitter=config.checks.jitter,
            heartbeat=lambda: self.heartbeat.beat("collect"),
        )
        self.stopping = asyncio.Event()
        mqtt = config.mqtt
        self.limits = {
            "collect": COLLECT_STALE,
            "mqtt": mqtt.reconnect_max + 2 * mqtt.connect_timeout + 10.0,
        }

    def _on_command(self, payload: bytes) -> None:
        self.executor.submit(payload)

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> int:
        """Run until :meth:`stop`; 0 after a clean stop, 1 if a loop died."""
        mqtt_stop = asyncio.Event()
        runner = asyncio.create_task(self.runner.run(self.stopping), name="runner")
        mqtt = asyncio.create_task(self.publisher.run(mqtt_stop), name="mqtt")
        executor = asyncio.create_task(self.executor.run(), name="executor")
        stopping = asyncio.create_task(self.stopping.wait(), name="stopping")
        self.heartbeat.beat("collect")
        self.heartbeat.beat("mqtt")
        self.notifier.notify("READY=1", f"STATUS=collecting {len(self.checks)} checks")
        watchdog = asyncio.create_task(
            self.notifier.watchdog(self.heartbeat, self.limits, self.stopping), name="watchdog"
        )
        log.info(
            "agent %s started: checks %s", self.config.host, ", ".join(c.name for c in self.checks)
        )
        code = 0
        try:
            done, _ = await asyncio.wait(
                {runner, mqtt, executor, stopping}, return_when=asyncio.FIRST_COMPLETED
            )
            if stopping not in done:
                for task in done:
                    exc = task.exception()
                    log.critical(
                        "%s loop ended unexpectedly: %r", task.get_name(), exc, exc_info=exc
                    )
                code = 1
        finally:
            await self._shutdown(runner, mqtt, executor, mqtt_stop, others=(watchdog, stopping))
        return code

    async def _shutdown(
        self,
        runner: asyncio.Task[None],
        mqtt: asyncio.Task[None],
        executor: asyncio.Task[None],
        mqtt_stop: asyncio.Event,
        *,
        others: tuple[asyncio.Task[object], ...],
    ) -> None:
        began = time.monotonic()
        deadline = began + SHUTDOWN_BUDGET
        self.notifier.notify("STOPPING=1")
        self.stopping.set()
        await asyncio.wait({runner}, timeout=1.0)
        self.batcher.seal()  # the last partial tick goes into the buffer
        executor.cancel()
        # Drain and go offline on the open connection, if there is one; a loop that is
        # between connects is told to stop at once.
        self.publisher.finish(
            by=min(deadline - 1.0, time.monotonic() + self.config.publish.flush_timeout)
        )
        while not mqtt.done() and time.monotonic() < deadline:
            if not self.publisher.connected:
                mqtt_stop.set()
            await asyncio.wait({mqtt}, timeout=0.05)
        mqtt_stop.set()
        tasks = (runner, mqtt, executor, *others)
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        buffered = self.store.batch_count()
        self.store.close()
        self.notifier.close()
        log.info(
            "agent stopped in %.2fs (%d batches buffered for the next start)",
            time.monotonic() - began,
            buffered,
        )
