"""Deployments, events and hosts shaped like the API's, for the pure report and
progress tests. ``hostile`` puts markup and table-breaking characters in every free
text field (actor, reason, messages, details) to check the escaping."""

from __future__ import annotations

from typing import Any

T0 = 1_790_000_000.0
SCRIPT = '<script>alert("x")</script>'
HOSTILE = f"{SCRIPT} | *bold* [link](javascript:alert(1)) `code` & <b>"


def _rule(
    rule: str, verdict: str, cohort: str, start: float, end: float, message: str, **numbers: Any
) -> dict[str, Any]:
    return {
        "rule": rule,
        "verdict": verdict,
        "cohort": cohort,
        "window_start": start,
        "window_end": end,
        "enforced": True,
        "hosts": ["web-1"],
        "numbers": numbers,
        "message": message,
    }


def _window(
    t: float, canary: tuple[int, int, int, float], baseline: tuple[int, int, int, float]
) -> dict[str, Any]:
    def cohort(values: tuple[int, int, int, float]) -> dict[str, Any]:
        hosts, requests, errors, p95 = values
        return {
            "hosts": hosts,
            "requests": requests,
            "errors": errors,
            "error_rate": errors / requests if requests else None,
            "p50_ms": p95 / 2 if requests else None,
            "p95_ms": p95 if requests else None,
            "p99_ms": p95 * 1.2 if requests else None,
        }

    return {
        "kind": "analysis.window",
        "time": t,
        "message": "numbers",
        "evidence": {
            "start": t - 2,
            "end": t,
            "cohorts": {"canary": cohort(canary), "baseline": cohort(baseline)},
        },
    }


def _steps() -> list[dict[str, Any]]:
    return [
        {
            "index": 0,
            "name": "10%",
            "percent": 10.0,
            "bake": 10.0,
            "approval": False,
            "orders": [{"host": "web-1"}],
        },
        {
            "index": 1,
            "name": "50%",
            "percent": 50.0,
            "bake": 5.0,
            "approval": False,
            "orders": [{"host": "web-2"}],
        },
        {
            "index": 2,
            "name": "100%",
            "percent": 100.0,
            "bake": 5.0,
            "approval": False,
            "orders": [{"host": "web-3"}, {"host": "web-4"}],
        },
    ]


def rolled_back(
    *, hostile: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """2.1.0 canary rolled back automatically at 10 %, after 6 s."""
    text = HOSTILE if hostile else ""
    actor = HOSTILE if hostile else "alice"
    reason_text = "error_rate: 30/200 = 15.00%, at 99.0% confidence at least 9.50%, over 1.00%"
    deployment = {
        "id": "d1-rolled",
        "environment": "production",
        "strategy": "canary",
        "version": "2.1.0",
        "from_version": "1.0.0",
        "actor": actor,
        "reason": text or "CHG-1",
        "created": T0,
        "updated": T0 + 6.2,
        "phase": "rolled_back",
        "state": "rolled_back",
        "step": 0,
        "steps": _steps(),
        "steps_total": 3,
        "step_name": "10%",
        "percent": 10.0,
        "bake_length": 10.0,
        "bake_remaining": 4.0,
        "targets": {
            h: {"host": h, "from_version": "1.0.0", "labels": {"zone": z}}
            for h, z in (("web-1", "a"), ("web-2", "b"), ("web-3", "c"), ("web-4", "a"))
        },
        "commands": {
            "d1-rolled-c0001": {
                "id": "d1-rolled-c0001",
                "host": "web-1",
                "purpose": "rollout",
                "step": 0,
                "action": "deploy",
                "version": "2.1.0",
                "issued": T0,
                "state": "succeeded",
                "detail": f"current -> releases/2.1.0 {text}".strip(),
            },
            "d1-rolled-c0002": {
                "id": "d1-rolled-c0002",
                "host": "web-1",
                "purpose": "rollback",
                "step": -1,
                "action": "rollback",
                "version": "1.0.0",
                "issued": T0 + 6.0,
                "state": "succeeded",
                "detail": "current -> releases/1.0.0",
            },
        },
        "rollback_version": "1.0.0",
        "rollback_reason": reason_text,
        "finished": T0 + 6.2,
        "summary": f"rolled back: every host reports 1.0.0; healthy (reason: {reason_text})",
    }
    rules = [
        _rule(
            "error_rate",
            "fail",
            "canary",
            T0 + 0.1,
            T0 + 6.0,
            reason_text,
            events=30,
            trials=200,
            estimate=0.15,
            lower=0.095,
            upper=0.23,
            threshold=0.01,
            confidence=0.99,
        ),
        _rule(
            "latency",
            "pass",
            "canary",
            T0 + 0.1,
            T0 + 6.0,
            "latency: 0/200, at 99.0% confidence at most 2.61%, under 5.00%",
            quantile=0.95,
            quantile_ms=160.0,
            latency_ms=1000.0,
            events=0,
            trials=200,
            estimate=0.0,
            lower=0.0,
            upper=0.0261,
            threshold=0.05,
            confidence=0.99,
        ),
    ]
    events: list[dict[str, Any]] = [
        {
            "seq": 1,
            "time": T0,
            "kind": "deployment.created",
            "actor": actor,
            "message": f"d1-rolled: 2.1.0 to 4 production hosts, from 1.0.0 {text}".strip(),
            "evidence": {
                "version": "2.1.0",
                "reason": text or "CHG-1",
                "steps": [{"name": "10%", "hosts": ["web-1"], "bake": 10.0}],
            },
        },
        {
            "seq": 2,
            "time": T0,
            "kind": "operator.start",
            "actor": actor,
            "message": "alice: start d1-rolled: started",
            "evidence": {"accepted": True},
        },
        {
            "seq": 3,
            "time": T0 + 0.05,
            "kind": "command.succeeded",
            "host": "web-1",
            "message": "web-1: deploy 2.1.0 succeeded",
            "evidence": {},
        },
        {
            "seq": 4,
            "time": T0 + 0.1,
            "kind": "deployment.acked",
            "message": "step 10%: every host confirmed; baking 10 s",
            "evidence": {
                "trigger": "acked",
                "from": "deploying",
                "to": "baking",
                "step": 0,
                "hosts": ["web-1"],
            },
        },
        {"seq": 5, **_window(T0 + 2, (1, 100, 14, 160.0), (3, 300, 0, 80.0))},
        {"seq": 6, **_window(T0 + 4, (1, 100, 16, 170.0), (3, 300, 1, 80.0))},
        {
            "seq": 7,
            "time": T0 + 6.0,
            "kind": "deployment.fail",
            "message": f"rolling back to 1.0.0: {reason_text}",
            "evidence": {
                "trigger": "fail",
                "from": "baking",
                "to": "rolling_back",
                "step": 0,
                "bake_elapsed": 5.9,
                "bake_length": 10.0,
                "reason": reason_text,
                "outcome": "fail",
                "failed": ["error_rate"],
                "rules": rules,
                "baseline": {
                    "error_rate": {
                        "same_breach": False,
                        "rule": _rule(
                            "error_rate",
                            "pass",
                            "baseline",
                            T0 + 0.1,
                            T0 + 6.0,
                            "error_rate: 1/900, at 99.0% confidence at most 0.70%, under 1.00%",
                            events=1,
                            trials=900,
                            estimate=0.0011,
                            lower=0.0001,
                            upper=0.007,
                            threshold=0.01,
                        ),
                    }
                },
            },
        },
        {
            "seq": 8,
            "time": T0 + 6.1,
            "kind": "command.succeeded",
            "host": "web-1",
            "message": "web-1: rollback 1.0.0 succeeded",
            "evidence": {},
        },
        {
            "seq": 9,
            "time": T0 + 6.2,
            "kind": "deployment.rollback_done",
            "message": deployment["summary"],
            "evidence": {
                "trigger": "rollback_done",
                "from": "rolling_back",
                "to": "rolled_back",
                "step": 0,
                "commands": [
                    {
                        "host": "web-1",
                        "action": "rollback",
                        "state": "succeeded",
                        "reported_version": "1.0.0",
                        "expected_version": "1.0.0",
                    }
                ],
            },
        },
    ]
    if hostile:
        events.append(
            {
                "seq": 10,
                "time": T0 + 6.3,
                "kind": "operator.pause",
                "actor": actor,
                "message": f"{actor}: pause d1-rolled: refused",
                "evidence": {
                    "accepted": False,
                    "reason": text,
                    "reasons": [f"the deployment is rolled_back {text}"],
                },
            }
        )
    hosts = [
        {"host": h, "online": h != "web-4", "version": "1.0.0", "environment": "production"}
        for h in ("web-1", "web-2", "web-3", "web-4")
    ]
    return deployment, events, hosts
