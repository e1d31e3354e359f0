"""Post-deployment verification through the real engine and the simulated fleet: the
environment's ``verify`` commands run once every host reports the new version, their
failure (or a missing report) rolls back with the output tail in the evidence, their
success completes, a restart re-asks for the unreported ones and a repeated report
counts once."""

from __future__ import annotations

import pytest

from coordinator.engine import Phase, RunVerification, VerificationReported
from shared.config import ConfigError
from shared.evidence import (
    PreflightReport,
    RollbackStarted,
    VerificationStarted,
    Verified,
    decode_evidence,
)

from .sim import Profile, Sim, make_config

T0 = 120.0
GOOD = Profile(error_rate=0.002)
VERIFY = """
[[environments.{env}.verify]]
name = "smoke"
argv = ["./smoke", "{{version}}"]
timeout = 60
[[environments.{env}.verify]]
name = "orders"
argv = ["./orders-check"]
timeout = 30
"""


def _sim(environment: str = "production", **fields: object) -> Sim:
    config = make_config(VERIFY.format(env=environment))
    sim = Sim(
        hosts=6,
        environment=environment,
        config=config,
        profiles={"2.0.0": GOOD},
        blue_green=environment == "staging",
        **fields,  # type: ignore[arg-type]
    )
    sim.run_until(T0)
    reply = sim.start("d1", "2.0.0", environment=environment)
    assert reply.accepted, reply.reasons
    return sim


def _until_verifying(sim: Sim, limit: float = 6 * 3600) -> float:
    sim.run_until(limit, stop=lambda: bool(sim.records("verification.started")))
    return sim.first("verification.started").time


@pytest.mark.parametrize("environment", ["production", "staging", "development"])
def test_passing_verification_completes_after_every_host_reports_the_new_version(
    environment: str,
) -> None:
    sim = _sim(environment)
    started_at = _until_verifying(sim)
    # Started only once every host runs the new version, in VERIFYING.
    assert set(sim.versions().values()) == {"2.0.0"}
    assert sim.engine.phase("d1") is Phase.VERIFYING
    started = decode_evidence(
        sim.first("verification.started").kind, sim.first("verification.started").evidence
    )
    assert isinstance(started, VerificationStarted)
    assert started.commands == ["smoke", "orders"]
    policy = sim.config.environments.production.ack_timeout
    assert started.deadline == started_at + 60 + 30 + policy
    runs = [a for _, a in sim.actions if isinstance(a, RunVerification)]
    assert [[c.name for c in r.commands] for r in runs] == [["smoke", "orders"]]
    assert runs[0].commands[0].argv == ["./smoke", "{version}"]

    assert sim.finish("d1", 8 * 3600) == "completed"
    reports = sim.records("verification.reported")
    assert [(r.evidence["name"], r.evidence["ok"]) for r in reports] == [
        ("smoke", True),
        ("orders", True),
    ]
    verified = sim.first("deployment.verified")
    assert verified.time == reports[-1].time  # completes on the last report
    evidence = decode_evidence(verified.kind, verified.evidence)
    assert isinstance(evidence, Verified)
    assert [(v.name, v.ok) for v in evidence.verification] == [("smoke", True), ("orders", True)]
    assert "verification passed (smoke, orders)" in verified.message
    assert not sim.records("deployment.fail")


@pytest.mark.parametrize("environment", ["production", "staging", "development"])
def test_failing_verification_rolls_back_with_its_output_tail(environment: str) -> None:
    sim = _sim(environment)
    sim.verify_ok["smoke"] = False
    _until_verifying(sim)
    assert sim.finish("d1", 8 * 3600) == "rolled_back"
    fail = sim.first("deployment.fail")
    evidence = decode_evidence(fail.kind, fail.evidence)
    assert isinstance(evidence, RollbackStarted)
    assert evidence.rule == "verification"
    assert evidence.verification is not None
    assert evidence.verification.name == "smoke"
    assert evidence.verification.output_tail == "smoke: GET /orders 502\n"
    assert "verification command smoke failed" in fail.message
    assert evidence.hosts == sorted(sim.hosts)  # every host got the new version
    # The command after the failed one never ran.
    assert [name for _, _, name in sim.verify_runs] == ["smoke"]
    assert set(sim.versions().values()) == {"1.0.0"}
    assert not sim.records("deployment.verified")
    assert [n.kind for n in sim.notifications("deployment.rolling_back")] == [
        "deployment.rolling_back"
    ]


def test_unreported_verification_rolls_back_at_its_deadline() -> None:
    sim = _sim()
    sim.verify_lost.add("orders")
    started_at = _until_verifying(sim)
    deadline = started_at + 60 + 30 + sim.config.environments.production.ack_timeout
    assert sim.finish("d1", 8 * 3600) == "rolled_back"
    fail = sim.first("deployment.fail")
    assert fail.time == deadline
    evidence = decode_evidence(fail.kind, fail.evidence)
    assert isinstance(evidence, RollbackStarted)
    assert evidence.verification is not None
    assert evidence.verification.pending == ["orders"]


def test_a_restart_mid_verification_reruns_only_the_unreported_commands() -> None:
    sim = _sim()
    sim.verify_delay = 20.0
    started_at = _until_verifying(sim)
    # smoke reports at +20; the coordinator dies at +25 before orders' report at +40.
    sim.run_until(started_at + 25)
    assert [r.evidence["name"] for r in sim.records("verification.reported")] == ["smoke"]
    sim.crash(downtime=30)
    sim.run_until(started_at + 60)
    assert sim.restored_at
    resent = [a for a in sim.resent if isinstance(a, RunVerification)]
    assert [[c.name for c in a.commands] for a in resent] == [["orders"]]
    assert sim.finish("d1", 8 * 3600) == "completed"
    names = [r.evidence["name"] for r in sim.records("verification.reported")]
    assert names == ["smoke", "orders"]


def test_a_repeated_or_late_report_counts_once() -> None:
    sim = _sim()
    _until_verifying(sim)
    assert sim.finish("d1", 8 * 3600) == "completed"
    before = len(sim.records("verification.reported"))
    sim.feed(VerificationReported(deployment_id="d1", name="smoke", ok=False, output_tail="x"))
    assert len(sim.records("verification.reported")) == before
    ignored = sim.first("verification.ignored")
    assert isinstance(decode_evidence(ignored.kind, ignored.evidence), PreflightReport)
    assert sim.phase("d1") == "completed"
    sim.feed(VerificationReported(deployment_id="nope", name="smoke", ok=True))
    assert len(sim.records("verification.ignored")) == 2


def test_a_pause_during_verification_keeps_its_reports_and_a_failure_still_rolls_back() -> None:
    sim = _sim()
    sim.verify_delay = 20.0
    sim.verify_ok["orders"] = False
    started_at = _until_verifying(sim)
    assert sim.operator("pause", "d1", reason="look").accepted
    sim.run_until(started_at + 25)
    assert sim.phase("d1") == "paused"
    assert [r.evidence["name"] for r in sim.records("verification.reported")] == ["smoke"]
    assert sim.finish("d1", 8 * 3600) == "rolled_back"  # orders failed while paused
    assert sim.first("deployment.fail").evidence["verification"]["name"] == "orders"


def test_no_verify_commands_completes_as_before() -> None:
    sim = Sim(hosts=6, profiles={"2.0.0": GOOD})
    sim.run_until(T0)
    assert sim.start("d1", "2.0.0").accepted
    assert sim.finish("d1", 8 * 3600) == "completed"
    assert not sim.records("verification.started")
    assert not [a for _, a in sim.actions if isinstance(a, RunVerification)]
    verified = sim.first("deployment.verified")
    assert decode_evidence(verified.kind, verified.evidence).verification == []  # type: ignore[union-attr]


def test_verify_command_names_must_be_unique() -> None:
    with pytest.raises(ConfigError, match="verify command names must be unique"):
        make_config(
            """
[[environments.production.verify]]
name = "smoke"
argv = ["true"]
[[environments.production.verify]]
name = "smoke"
argv = ["false"]
"""
        )
