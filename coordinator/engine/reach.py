"""Which hosts a deployment can reach now, and what a host that comes back should run.

A host is unreachable when its agent's Will has said it is offline for the environment's
offline grace (a broker restart sends every Will, and the hosts are back within
seconds), or when nothing has come from it (a sample, a status, a command's answer) for
the missing-data grace: a partition that the broker has not noticed yet. A step neither
commands nor waits for an unreachable host, a rollback or a completion finishes
without it, and when it comes back (its birth status, a new session) it is brought to
the version it should run now, by a command with evidence like any other.

The last sign of life is derived state: after a restore, or the shell's return to the
broker, it starts again then, so the coordinator's downtime never makes a host
unreachable; except for a host that was missing already (EngineState.carried, saved
with the snapshot like the offline clocks), which the coordinator's outage does not
excuse.
"""

from __future__ import annotations

from coordinator.engine.deployment import Deployment, Order
from coordinator.engine.phases import ACTIVE, Phase
from coordinator.engine.state import EngineState


class Reach:
    def __init__(self, state: EngineState) -> None:
        self.state = state
        # Engine time of the latest sign of life of each host.
        self.heard: dict[str, float] = {}

    def went_offline(self, host: str, now: float, *, first_heard: bool = False) -> None:
        """``host``'s Will, at ``now``. First heard of offline (a restored engine's
        replay, or a new engine's first look at the broker's retained statuses), its
        offline clock keeps the time the snapshot saved, or starts now: whether it went
        a moment ago or days ago, this engine did not see it go."""
        if first_heard:
            self.state.offline_from.setdefault(host, now)
        else:
            self.state.offline_from[host] = now

    def came_online(self, host: str) -> None:
        self.state.offline_from.pop(host, None)

    def saw(self, host: str, now: float) -> None:
        """A sample, an online status or an answer from ``host`` at ``now``."""
        self.heard[host] = now

    def last_sign(self, host: str) -> float:
        """When ``host`` last showed it is alive (never before the engine's start or the
        shell's return, unless it was missing already: EngineState.carried)."""
        carried = self.state.carried.get(host)
        if carried is not None:
            return carried[0]
        record = self.state.fleet.get(host)
        since = self.state.since if self.state.since is not None else self.state.now
        times = [since, self.heard.get(host, since)]
        if record is not None and record.online:
            times.append(record.changed_at)
        return max(times)

    def reachable(self, host: str, now: float) -> bool:
        """Whether ``host`` counts as reachable at ``now``: heard of, and neither offline
        (its Will) for the offline grace nor silent for the missing-data grace. While
        the shell is away from the broker no such clock runs: hosts are judged as at the
        moment it went, and every grace starts again when it is back."""
        record = self.state.fleet.get(host)
        state = self.state
        at = state.watched_at(now)
        if record is None:
            # Not heard of yet: a restored engine before the broker's retained statuses
            # (it keeps no host records), maybe away from the broker still. A target of
            # a deployment has the missing-data grace to be heard of, like a host that
            # has not reported yet; anything else is not reachable.
            environment = next(
                (
                    d.environment
                    for d in state.deployments.values()
                    if d.phase in ACTIVE and host in d.targets
                ),
                None,
            )
            if environment is None:
                return False
            grace = state.policy(environment).missing_data_grace
            return at - self.last_sign(host) < grace
        policy = state.policy(record.environment)
        if not record.online and state.offline_for(host, now) >= policy.offline_after:
            return False
        return at - self.last_sign(host) < policy.missing_data_grace

    def gone(self, host: str, deadline: float, now: float) -> bool:
        """Whether a command to ``host`` due by ``deadline`` should be given up as to an
        unreachable host rather than fail: the host is unreachable, or its Will has come
        and the deadline has passed (a host that died late in its command's ack window
        is dropped, not blamed, even within the offline grace)."""
        if not self.reachable(host, now):
            return True
        record = self.state.fleet.get(host)
        return record is not None and not record.online and now >= deadline

    def away(self, dep: Deployment, now: float) -> set[str]:
        """The deployment's target hosts that are unreachable now."""
        return {h for h in dep.targets if not self.reachable(h, now)}

    def share(self, dep: Deployment, now: float) -> tuple[list[str], float]:
        """The target hosts that count against the policy's tolerated share (unreachable
        now, or skipped by a step, and not accepted by an operator) and their share."""
        counted = (self.away(dep, now) | set(dep.unreachable)) - set(dep.accepted_unreachable)
        total = max(1, len(dep.targets))
        return sorted(counted), len(counted) / total


def latest_finished(state: EngineState, environment: str, host: str) -> Deployment | None:
    """The environment's most recently finished deployment that covered ``host``, if it
    completed or rolled back (what a returning host should match). None after a failed
    rollback: which version is right is a person's call."""
    finished = [
        d
        for d in state.deployments.values()
        if d.environment == environment
        and d.phase in (Phase.COMPLETED, Phase.ROLLED_BACK, Phase.FAILED)
        and host in d.targets
    ]
    if not finished:
        return None
    latest = max(finished, key=lambda d: d.finished or 0.0)
    return None if latest.phase is Phase.FAILED else latest


def ordered_by_now(dep: Deployment, host: str) -> bool:
    """Whether the plan has reached ``host``: it is in one of the steps sent so far."""
    if dep.phase is Phase.PREFLIGHT:
        return False
    return any(o.host == host for step in dep.steps[: dep.step + 1] for o in step.orders)


def deploy_order(host: str, version: str) -> Order:
    return Order(host=host, action="deploy", version=version, expect_version=version)


def rollback_order(host: str, version: str | None) -> Order:
    return Order(host=host, action="rollback", version=version, expect_version=version)
