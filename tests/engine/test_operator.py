"""Operator gates and the preflight gate: accepted, idempotent, or refused with the
reasons and no change; each recorded with who and why."""

from __future__ import annotations

from coordinator.engine import CommandResultReceived, MetricsReceived, OperatorReply, RunPreflight
from shared.messages import MetricBatch, Sample

from .sim import Profile, Sim, make_config

T0 = 120.0
DELAY = 2.0
GOOD = Profile(error_rate=0.002)


def running(hosts: int = 10, config_toml: str = "", **kw: object) -> Sim:
    sim = Sim(hosts=hosts, config=make_config(config_toml), profiles={"2.0.0": GOOD}, **kw)  # type: ignore[arg-type]
    sim.run_until(T0)
    assert sim.start("d1", "2.0.0", reason="release 2.0").accepted
    return sim


def unchanged(sim: Sim, reply: OperatorReply, before: object) -> None:
    assert not reply.accepted
    assert reply.reasons
    assert sim.engine.deployment("d1") == before


def test_promote_skips_the_rest_of_the_bake_and_is_recorded_with_who_and_why() -> None:
    sim = running()
    sim.run_until(1000.0)
    reply = sim.operator("promote", "d1", actor="bob", reason="hotfix, verified by hand")
    assert reply.accepted and reply.changed
    promoted = sim.first("deployment.next_step")
    assert promoted.time == 1000.0
    record = sim.first("deployment.promote")
    assert record.actor == "bob"
    assert "hotfix, verified by hand" in record.message
    assert record.evidence["outcome"] == "pass" or record.evidence["outcome"] == "wait"
    assert record.evidence["bake_elapsed"] == 1000.0 - (T0 + DELAY)
    operator = sim.first("operator.promote")
    assert operator.actor == "bob"
    assert operator.evidence["reason"] == "hotfix, verified by hand"
    assert operator.evidence["accepted"] is True


def test_promote_with_a_step_is_idempotent_and_never_skips_the_next_bake() -> None:
    sim = running()
    sim.run_until(1000.0)
    assert sim.operator("promote", "d1", step=0).changed
    sim.run_until(1010.0)
    assert sim.phase("d1") == "baking"
    retry = sim.operator("promote", "d1", step=0)
    assert retry.accepted and not retry.changed
    assert "already promoted" in retry.message
    assert sim.phase("d1") == "baking"
    assert len(sim.records("deployment.next_step")) == 1


def test_promote_is_refused_while_deploying_and_changes_nothing() -> None:
    sim = running()
    before = sim.engine.deployment("d1")
    assert before is not None and before.phase.value == "deploying"
    reply = sim.operator("promote", "d1")
    unchanged(sim, reply, before)
    assert "cannot promote while deploying" in reply.reasons[0]
    refused = sim.first("operator.promote")
    assert refused.evidence["accepted"] is False


def test_promote_is_refused_while_a_canary_host_has_no_data() -> None:
    sim = running()
    dep = sim.engine.deployment("d1")
    assert dep is not None
    canary = dep.steps[0].orders[0].host
    sim.at(600.0, lambda: sim.kill(canary))
    sim.run_until(700.0)
    assert sim.phase("d1") == "held"
    before = sim.engine.deployment("d1")
    reply = sim.operator("promote", "d1")
    unchanged(sim, reply, before)
    assert reply.reasons == [f"{canary}: no data (offline)"]


def test_pause_resume_and_rollback_are_idempotent() -> None:
    sim = running()
    sim.run_until(600.0)
    first, second = sim.operator("pause", "d1"), sim.operator("pause", "d1")
    assert first.changed and second.accepted and not second.changed
    assert len(sim.notifications("deployment.paused")) == 1
    assert sim.operator("resume", "d1").changed
    again = sim.operator("resume", "d1")
    assert again.accepted and not again.changed
    assert sim.operator("rollback", "d1", reason="changed my mind").changed
    repeat = sim.operator("rollback", "d1")
    assert repeat.accepted and not repeat.changed
    sim.run_until(700.0)
    assert sim.phase("d1") == "rolled_back"
    assert sim.operator("rollback", "d1").accepted
    assert len(sim.notifications("deployment.rolling_back")) == 1
    rolling = sim.first("deployment.rollback")
    assert rolling.actor == "alice"
    assert "changed my mind" in rolling.message
    assert set(sim.versions().values()) == {"1.0.0"}


def test_invalid_requests_are_refused_with_a_reason() -> None:
    sim = running()
    sim.run_until(600.0)
    before = sim.engine.deployment("d1")
    for action in ("approve",):
        unchanged(sim, sim.operator(action, "d1"), before)
    unknown = sim.operator("pause", "nope")
    assert not unknown.accepted and unknown.reasons == ["no deployment nope"]
    twice = sim.start("d1", "3.0.0")
    assert not twice.accepted and "already used" in twice.reasons[0]
    other = sim.start("d2", "3.0.0")
    assert not other.accepted and "d1 is baking in production" in other.reasons[0]
    missing = sim.operator("start", "d3")
    assert missing.reasons == ["start needs a version"]


def test_the_approval_gate_holds_the_step_to_100_percent_for_an_operator() -> None:
    sim = running(config_toml="[environments.production.canary]\napproval_before_full = true\n")
    early = sim.operator("approve", "d1")
    assert not early.accepted and "nothing awaits approval" in early.reasons[0]
    sim.run_until(6000.0)
    assert sim.phase("d1") == "awaiting_approval"
    gate = sim.first("deployment.approval_required")
    assert len(sim.notifications("deployment.approval_needed")) == 1
    assert [r.evidence["percent"] for r in sim.records("deployment.next_step")] == [25.0, 50.0]
    reply = sim.operator("approve", "d1", actor="carol", reason="dashboards look fine")
    assert reply.accepted and reply.changed
    approved = sim.first("deployment.approve")
    assert approved.time == 6000.0 and approved.actor == "carol"
    assert approved.evidence["percent"] == 100.0
    assert gate.time < approved.time
    again = sim.operator("approve", "d1", step=3)
    assert again.accepted and not again.changed
    assert sim.finish("d1", 20000.0) == "completed"


def test_manual_rollback_after_completion_returns_to_the_last_stable_version() -> None:
    sim = Sim(hosts=6, environment="development", profiles={"2.0.0": GOOD, "3.0.0": GOOD})
    sim.run_until(T0)
    assert sim.start("d1", "2.0.0", environment="development").accepted
    assert sim.finish("d1", 3600.0) == "completed"
    sim.run_until(sim.now + 60.0)
    assert sim.start("d2", "3.0.0", environment="development").accepted
    assert sim.finish("d2", 7200.0) == "completed"
    assert set(sim.versions().values()) == {"3.0.0"}

    replaced = sim.operator("rollback", "d1")
    assert not replaced.accepted and "replaced" in replaced.reasons[0]
    reply = sim.operator("rollback", "d2", actor="dave", reason="customer reports")
    assert reply.accepted and reply.changed
    assert reply.message == "rolling back to 2.0.0"
    assert sim.finish("d2", 9000.0) == "rolled_back"
    assert set(sim.versions().values()) == {"2.0.0"}
    done = sim.first("deployment.rollback_done")
    assert done.evidence["stable_version"] == "2.0.0"
    assert done.evidence["not_on_stable"] == {}
    assert [h.outcome for h in sim.engine.history()] == ["completed", "completed", "rolled_back"]


def test_start_is_refused_by_the_gate_with_every_reason() -> None:
    sim = Sim(hosts=4)
    sim.run_until(T0)
    sim.kill("host-01")
    sim.hosts["host-02"].version = "0.9.0"
    sim.revive("host-02")  # a new session reporting another version
    reply = sim.start("d1", "2.0.0")
    assert not reply.accepted
    assert "host-01: offline" in reply.reasons
    assert any("different versions" in r for r in reply.reasons)
    assert sim.engine.deployment("d1") is None
    assert not sim.sent
    refused = sim.first("deployment.refused")
    assert refused.evidence["reasons"] == reply.reasons


def test_start_is_refused_while_an_alert_fires_on_a_target() -> None:
    sim = Sim(hosts=4)
    sim.run_until(T0)
    for i in range(3):
        sim.feed(
            _metrics(
                "host-03",
                100 + i,
                [Sample(check="cpu", time=sim.now, ok=True, values={"percent": 97.0})],
            )
        )
    reply = sim.start("d1", "2.0.0")
    assert not reply.accepted
    assert any(r.startswith("host-03: alert cpu firing") for r in reply.reasons)


def test_start_is_refused_for_hosts_of_another_environment_or_unknown() -> None:
    sim = Sim(hosts=4)
    sim.run_until(T0)
    reply = sim.start("d1", "2.0.0", environment="staging", hosts=["host-00", "ghost"])
    assert not reply.accepted
    assert reply.reasons == ["ghost: unknown host", "host-00: in production, not staging"]


def test_a_selection_of_hosts_narrows_the_targets() -> None:
    sim = Sim(hosts=6, environment="development", profiles={"2.0.0": GOOD})
    sim.run_until(T0)
    assert sim.start(
        "d1", "2.0.0", environment="development", hosts=["host-01", "host-04"]
    ).accepted
    assert sim.finish("d1", 3600.0) == "completed"
    assert {h for h, v in sim.versions().items() if v == "2.0.0"} == {"host-01", "host-04"}


PREFLIGHT = """
[[environments.development.preflight]]
name = "backup"
argv = ["pg_dump", "app"]
[[environments.development.preflight]]
name = "env-check"
argv = ["true"]
"""


def test_preflight_commands_must_pass_before_any_host_changes() -> None:
    sim = Sim(hosts=4, environment="development", config=make_config(PREFLIGHT))
    sim.run_until(T0)
    reply = sim.start("d1", "2.0.0", environment="development")
    assert reply.accepted and "2 preflight" in reply.message
    asked = [a for _, a in sim.actions if isinstance(a, RunPreflight)]
    assert [c.name for c in asked[0].commands] == ["backup", "env-check"]
    assert sim.phase("d1") == "preflight" and not sim.sent
    sim.run_until(T0 + 1.5)  # reports arrive after 1 s; agents answer 2 s later
    assert sim.phase("d1") == "deploying"
    assert sim.first("deployment.preflight_passed").time == T0 + 1.0
    assert len(sim.sent) == 4


def test_a_failed_preflight_command_refuses_the_deployment() -> None:
    sim = Sim(hosts=4, environment="development", config=make_config(PREFLIGHT))
    sim.preflight_ok["backup"] = False
    sim.run_until(T0)
    assert sim.start("d1", "2.0.0", environment="development").accepted
    sim.run_until(T0 + 5)
    assert sim.phase("d1") == "refused"
    refused = sim.first("deployment.preflight_failed")
    assert refused.evidence["name"] == "backup"
    assert refused.evidence["output_tail"] == "done"
    assert len(sim.notifications("deployment.refused")) == 1
    assert not sim.sent
    nothing = sim.operator("rollback", "d1")
    assert nothing.accepted and not nothing.changed
    # The environment is free again.
    assert sim.start("d2", "2.0.0", environment="development").accepted


def _metrics(host: str, seq: int, samples: list[Sample]) -> MetricsReceived:
    return MetricsReceived(batch=MetricBatch(host=host, session=1, seq=seq, samples=samples))


def test_a_rolled_back_deployment_leaves_the_completed_one_before_it_undoable() -> None:
    sim = Sim(
        hosts=4,
        environment="development",
        profiles={"2.0.0": GOOD, "3.0.0": Profile(database_fail=1.0)},
    )
    sim.run_until(T0)
    assert sim.start("d1", "2.0.0", environment="development").accepted
    assert sim.finish("d1", 3600.0) == "completed"
    assert sim.start("d2", "3.0.0", environment="development").accepted
    assert sim.finish("d2", 7200.0) == "rolled_back"
    assert set(sim.versions().values()) == {"2.0.0"}
    reply = sim.operator("rollback", "d1", reason="2.0 leaks memory")
    assert reply.accepted and reply.message == "rolling back to 1.0.0"
    assert sim.finish("d1", 9000.0) == "rolled_back"
    assert set(sim.versions().values()) == {"1.0.0"}


def test_a_failed_rollback_is_retried_only_where_it_was_not_confirmed() -> None:
    sim = Sim(hosts=4, environment="development", profiles={"2.0.0": Profile(database_fail=1.0)})
    stuck = "host-02"
    broken = {stuck}  # its agent fails rollbacks until repaired
    original = sim._deliver

    def deliver(command):  # type: ignore[no-untyped-def]
        if command.action == "rollback" and command.host in broken:
            result = sim._result(sim.hosts[stuck], command, "failed")
            sim.feed(CommandResultReceived(result=result))
            return None
        return original(command)

    sim._deliver = deliver  # type: ignore[method-assign]
    sim.run_until(T0)
    assert sim.start("d1", "2.0.0", environment="development").accepted
    assert sim.finish("d1", 3600.0) == "failed"
    failed = sim.first("deployment.rollback_failed")
    assert failed.evidence["not_on_stable"] == {stuck: {"version": "2.0.0", "slot": None}}
    assert len(sim.notifications("deployment.rollback_failed")) == 1
    first_attempt = {c.command_id for c in sim.sent if c.action == "rollback"}
    broken.clear()
    reply = sim.operator("rollback", "d1", reason="retry after fixing host-02")
    assert reply.accepted and reply.changed
    assert sim.finish("d1", 7200.0) == "rolled_back"
    retried = [c for c in sim.sent if c.action == "rollback" and c.command_id not in first_attempt]
    assert [c.host for c in retried] == [stuck]
    assert set(sim.versions().values()) == {"1.0.0"}


def test_ids_and_versions_are_checked_even_when_built_in_python() -> None:
    sim = Sim(hosts=2)
    sim.run_until(T0)
    bad_id = sim.start("bad id!", "2.0.0")
    assert not bad_id.accepted and "must match" in bad_id.reasons[0]
    bad_version = sim.start("d1", "../../etc")
    assert not bad_version.accepted and "must match" in bad_version.reasons[0]
    too_short = sim.start("x", "2.0.0")  # "x-c0001" would be too short a command id
    assert not too_short.accepted and "must match" in too_short.reasons[0]


def test_an_unknown_event_is_an_error() -> None:
    import pytest

    from coordinator.engine import EngineError

    sim = Sim(hosts=1)
    with pytest.raises(EngineError, match="not an engine event"):
        sim.engine.handle("tick", 1.0)  # type: ignore[arg-type]
