"""The preflight gate: a deployment starts only on a fleet fit to take it.

The guide's pre-deployment practice, as far as the engine can see it: every target host
is online, reporting, healthy and free of firing alerts, they all run one version (the
one a rollback will return to), and for blue-green each reports its active slot. The
configured preflight commands (a database backup, say) run in the shell, which reports
each outcome; the gate is checked again once they have all passed, because the fleet
may have changed while a backup ran.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from coordinator.engine.alerts import FiringAlert
from coordinator.engine.fleet import HostRecord
from coordinator.engine.rules import Silence, host_missing
from coordinator.engine.windows import CheckWindow, base_check
from shared.config.coordinator import EnvironmentPolicy, Strategy


def host_gate(
    policy: EnvironmentPolicy,
    *,
    strategy: Strategy,
    version: str,
    targets: list[HostRecord],
    checks: Callable[[str], Mapping[str, CheckWindow]],
    alerts: Callable[[str], list[FiringAlert]],
    silence: Silence,
    now: float,
) -> list[str]:
    """The reasons the gate is closed; empty when it is open."""
    reasons: list[str] = []
    if not targets:
        return ["no target hosts: no host of this environment has reported"]
    for record in targets:
        host = record.host
        if not record.online:
            reasons.append(f"{host}: offline")
            continue
        windows = checks(host)
        absent = host_missing(
            policy, record, windows, silence=silence, reference=silence.since, now=now
        )
        if absent is not None:
            reasons.append(f"{host}: no data ({absent[1]})")
        for required in policy.required_checks:
            if required not in windows:
                reasons.append(f"{host}: has not reported its {required} check yet")
        for name, window in sorted(windows.items()):
            if base_check(name) == name and window.last_ok is False:
                reasons.append(f"{host}: {name} check failing ({window.last_error or 'no detail'})")
        reasons.extend(
            f"{host}: alert {alert.rule} firing: {alert.message}" for alert in alerts(host)
        )
        if record.version == version:
            reasons.append(f"{host}: already runs {version}")
        if strategy == "blue-green" and record.slot is None:
            reasons.append(f"{host}: reports no active slot, which blue-green needs")
    versions = sorted({str(r.version) for r in targets})
    if len(versions) > 1:
        reasons.append(
            "target hosts run different versions ("
            + ", ".join(f"{r.host}={r.version}" for r in targets)
            + "): finish or roll back the last deployment first"
        )
    return reasons
