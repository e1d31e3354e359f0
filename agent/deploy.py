"""What deploy, switch and rollback do on the host, and the state they leave behind.

Two strategies (``deploy.strategy``):

* ``releases``: ``root/releases/<version>/`` holds each version (fetched by the optional
  ``deploy_hook`` when missing); activating a version points ``root/current`` at it by
  renaming a fresh symlink over the old one (atomic: there is never a moment without
  ``current``), then runs ``restart_command``.
* ``hooks``: ``deploy_hook`` installs and activates ``{version}`` (then
  ``restart_command`` if set); ``rollback_hook`` re-activates an earlier version
  (default: ``deploy_hook`` with that version).

``switch`` runs ``switch_hook`` to point traffic at a blue-green ``{slot}``. The slot
serving traffic is recorded state; before anything is recorded, ``initial_slot``.

Blue-green hosts also record the version each slot holds, because a switch (and the
coordinator's switch-back) names only the slot: the reported version is always that of
the slot serving traffic. ``initial_slot`` starts out holding ``initial_version``; a
deploy to a slot records its version there (while the deploy runs, and after it failed,
the slot's version is unknown); a switch or rollback to a slot reports that slot's
version. ``initial_slot`` and ``initial_version`` only fill in what was never recorded,
so once the agent has recorded a slot or a slot's version, the record wins, across
restarts and config changes.

Rollback goes back to what was active before the deployment named in the command
(recorded when that deployment first changed this host), else to the explicit version
or slot in the command, else to the previous version or slot. A second rollback for
the same deployment finds the host already there and changes nothing, so rollbacks
never toggle between two versions.

Every command runs as argv with placeholders substituted per argument, never through
a shell, under ``deploy.timeout``; its exit status and output tail go into the result.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final, NamedTuple

import msgspec

from agent import process
from agent.store import Store
from shared.config.agent import DeployConfig
from shared.messages import Command, Slot

log = logging.getLogger(__name__)
STATE_KEY: Final = "deploy"
BASES_KEPT: Final = 100
DETAIL_TAIL: Final = 2500


class Active(msgspec.Struct, frozen=True, kw_only=True):
    version: str | None = None
    slot: Slot | None = None


class DeployState(msgspec.Struct, kw_only=True):
    current: Active = Active()
    previous: Active | None = None
    # What was active before each deployment first changed this host.
    bases: dict[str, Active] = {}
    # Blue-green: the version installed on each slot; None while a deploy to that slot
    # runs or after one failed (what the slot holds is unknown).
    slots: dict[Slot, str | None] = {}


class Outcome(NamedTuple):
    ok: bool
    detail: str


class Deployer:
    def __init__(self, config: DeployConfig, *, host: str, store: Store) -> None:
        self.config = config
        self.host = host
        self.store = store
        self.root = Path(config.root)
        raw = store.get(STATE_KEY)
        self.state = msgspec.json.decode(raw, type=DeployState) if raw else DeployState()
        self._fill_in_initial()
        if config.strategy == "releases":
            on_disk = self._linked_version()
            if on_disk is not None and on_disk != self.state.current.version:
                # The symlink is the truth about what runs; state follows it.
                self.state.current = Active(version=on_disk, slot=self.state.current.slot)

    @property
    def current(self) -> Active:
        return self.state.current

    # -- the three actions ----------------------------------------------------------

    async def deploy(self, command: Command) -> Outcome:
        assert command.version is not None
        self._remember_base(command.deployment)
        version, slot = command.version, command.slot
        if self.config.strategy == "releases":
            outcome = await self._activate_release(command, version)
            self._follow_link()
            return outcome
        # Blue-green installs on the idle slot; a switch makes it current.
        idle = slot if slot is not None and slot != self.current.slot else None
        if idle is not None:
            # Written ahead: a deploy that fails or is cut short by a crash leaves the
            # slot holding something unknown, never the version it held before.
            self._record_slot(idle, None)
        outcome = await self._run(
            command,
            [("deploy hook", self.config.deploy_hook), *self._restart_steps()],
            version=version,
            slot=slot,
        )
        if outcome.ok:
            if idle is not None:
                self._record_slot(idle, version)
            else:
                self._move_to(Active(version=version, slot=self.current.slot))
        return outcome

    async def switch(self, command: Command) -> Outcome:
        assert command.slot is not None
        if not self.config.switch_hook:
            return Outcome(False, "no deploy.switch_hook configured; cannot switch slots")
        self._remember_base(command.deployment)
        slot = command.slot
        version = self._slot_version(slot, command.version)
        outcome = await self._run(
            command, [("switch hook", self.config.switch_hook)], version=version, slot=slot
        )
        if outcome.ok:
            self._move_to(Active(version=version, slot=slot))
        return outcome

    async def rollback(self, command: Command) -> Outcome:
        target = self._rollback_target(command)
        if target is None:
            return Outcome(False, "nothing to roll back to: no earlier version or slot recorded")
        current = self.current
        wants_slot = target.slot is not None and target.slot != current.slot
        wants_version = target.version is not None and target.version != current.version
        if not wants_slot and not wants_version:
            return Outcome(True, f"already at {_describe(current)}; nothing to do")
        details: list[str] = []
        if wants_slot:
            assert target.slot is not None
            if not self.config.switch_hook:
                return Outcome(False, "rollback needs a slot switch but no switch_hook is set")
            version = self._slot_version(target.slot, target.version)
            outcome = await self._run(
                command,
                [("switch hook", self.config.switch_hook)],
                version=version,
                slot=target.slot,
            )
            if not outcome.ok:
                return outcome
            self._set_current(Active(version=version, slot=target.slot))
            details.append(outcome.detail)
        if target.version is not None and target.version != self.current.version:
            if self.config.strategy == "releases":
                outcome = await self._activate_release(command, target.version)
                self._follow_link()
            else:
                hook = self.config.rollback_hook or self.config.deploy_hook
                name = "rollback hook" if self.config.rollback_hook else "deploy hook"
                outcome = await self._run(
                    command,
                    [(name, hook), *self._restart_steps()],
                    version=target.version,
                    slot=self.current.slot,
                )
                if outcome.ok:
                    self._set_current(Active(version=target.version, slot=self.current.slot))
            details.append(outcome.detail)
            if not outcome.ok:
                return Outcome(False, "; ".join(details))
        # Rolled back: no "previous" is left to return to, or a second rollback without a
        # deployment would flip back to the version just abandoned.
        self.state.previous = None
        self._save()
        return Outcome(True, "; ".join(details))

    # -- helpers --------------------------------------------------------------------

    def _fill_in_initial(self) -> None:
        """What the config says about a fresh install, where nothing is recorded."""
        config, slots = self.config, self.state.slots
        version, slot = self.state.current.version, self.state.current.slot
        if slot is None:
            slot = config.initial_slot
        if slot is not None and version is not None and slot not in slots:
            slots[slot] = version  # recorded by an agent that kept no per-slot versions
        if config.initial_version is not None:
            if config.initial_slot is not None:
                slots.setdefault(config.initial_slot, config.initial_version)
            elif slot is None and version is None:
                version = config.initial_version
        if slot is not None and version is None:
            version = slots.get(slot)
        self.state.current = Active(version=version, slot=slot)

    def _slot_version(self, slot: Slot, fallback: str | None) -> str | None:
        """The version ``slot`` holds, else what the command says it holds."""
        recorded = self.state.slots.get(slot)
        return recorded if recorded is not None else fallback

    def _record_slot(self, slot: Slot, version: str | None) -> None:
        self.state.slots[slot] = version
        self._save()

    def _rollback_target(self, command: Command) -> Active | None:
        if command.version is not None or command.slot is not None:
            return Active(version=command.version, slot=command.slot)
        base = self.state.bases.get(command.deployment)
        if base is not None and (base.version is not None or base.slot is not None):
            return base
        return self.state.previous

    def _remember_base(self, deployment: str) -> None:
        if deployment not in self.state.bases:
            self.state.bases[deployment] = self.current
            while len(self.state.bases) > BASES_KEPT:
                del self.state.bases[next(iter(self.state.bases))]
            self._save()

    def _move_to(self, new: Active) -> None:
        if new != self.current:
            self.state.previous = self.current
        self._set_current(new)

    def _follow_link(self) -> None:
        """Releases: what ``current`` points at is the current version."""
        linked = self._linked_version()
        if linked is not None:
            self._move_to(Active(version=linked, slot=self.current.slot))

    def _restart_steps(self) -> list[tuple[str, list[str]]]:
        if not self.config.restart_command:
            return []
        return [("restart command", self.config.restart_command)]

    def _set_current(self, new: Active) -> None:
        self.state.current = new
        if new.slot is not None and new.version is not None:
            self.state.slots[new.slot] = new.version  # the serving slot runs that version
        self._save()

    def _save(self) -> None:
        self.store.put(STATE_KEY, msgspec.json.encode(self.state))

    def _linked_version(self) -> str | None:
        try:
            target = os.readlink(self.root / "current")
        except OSError:
            return None
        path = Path(target)
        return path.name if path.parent.name == "releases" else None

    async def _activate_release(self, command: Command, version: str) -> Outcome:
        release = self.root / "releases" / version
        details: list[str] = []
        if not release.is_dir():
            if not self.config.deploy_hook:
                return Outcome(
                    False,
                    f"release directory {release} does not exist "
                    "and no deploy.deploy_hook is configured to fetch it",
                )
            fetched = await self._run(
                command,
                [("deploy hook", self.config.deploy_hook)],
                version=version,
                slot=command.slot,
            )
            details.append(fetched.detail)
            if not fetched.ok:
                return fetched
            if not release.is_dir():
                return Outcome(False, f"deploy hook succeeded but {release} does not exist")
        try:
            self._switch_link(version)
        except OSError as exc:
            return Outcome(False, f"cannot point {self.root / 'current'} at {release}: {exc}")
        details.append(f"current -> releases/{version}")
        if self.config.restart_command:
            restarted = await self._run(
                command, self._restart_steps(), version=version, slot=command.slot
            )
            details.append(restarted.detail)
            return Outcome(restarted.ok, "; ".join(details))
        return Outcome(True, "; ".join(details))

    def _switch_link(self, version: str) -> None:
        link = self.root / "current"
        temporary = self.root / f".current.{os.getpid()}.tmp"
        temporary.unlink(missing_ok=True)
        os.symlink(Path("releases") / version, temporary)
        try:
            os.replace(temporary, link)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)  # the rename survives a crash right after we report it
        finally:
            os.close(directory)

    async def _run(
        self,
        command: Command,
        steps: list[tuple[str, list[str]]],
        *,
        version: str | None,
        slot: str | None,
    ) -> Outcome:
        values = {
            "version": version or "",
            "slot": slot or "",
            "root": str(self.root),
            "release": str(self.root / "releases" / version) if version else "",
            "deployment": command.deployment,
            "host": self.host,
        }
        env = {f"ROLLGUARD_{key.upper()}": value for key, value in values.items()}
        env["ROLLGUARD_ACTION"] = command.action
        env["ROLLGUARD_COMMAND_ID"] = command.id
        details: list[str] = []
        for name, argv in steps:
            if not argv:
                return Outcome(False, f"no {name} configured")
            result = await process.run(
                [substitute(arg, values) for arg in argv],
                time_limit=self.config.timeout,
                env=env,
                cwd=str(self.root) if self.root.is_dir() else None,
            )
            log.info("%s %s: %s", name, result.argv[0], result.summary())
            details.append(_step_detail(name, result))
            if not result.ok:
                return Outcome(False, "; ".join(details))
        return Outcome(True, "; ".join(details))


def substitute(arg: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


def _step_detail(name: str, result: process.ProcessResult) -> str:
    status = "ok" if result.ok else f"failed ({result.summary()})"
    tail = result.output.strip()[-DETAIL_TAIL:]
    return f"{name} {status}" + (f": {tail}" if tail else "")


def _describe(active: Active) -> str:
    parts = [
        f"version {active.version}" if active.version else "",
        f"slot {active.slot}" if active.slot else "",
    ]
    return " ".join(p for p in parts if p) or "nothing"
