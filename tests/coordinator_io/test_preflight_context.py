"""Preflight commands know what they run for: the deployment's id, version, previous
version, environment and strategy, as ROLLGUARD_* variables and argv placeholders."""

from __future__ import annotations

from coordinator.daemon.preflight import HookContext, run_preflight
from shared.config.coordinator import PreflightCommand

CONTEXT = HookContext(
    deployment_id="d20260101-000000-abcd",
    version="2.0.0",
    previous_version="1.0.0",
    environment="production",
    strategy="canary",
)

SCRIPT = (
    'printf "%s|%s|%s|%s|%s|%s" "$ROLLGUARD_DEPLOYMENT_ID" "$ROLLGUARD_VERSION" '
    '"$ROLLGUARD_PREVIOUS_VERSION" "$ROLLGUARD_ENVIRONMENT" "$ROLLGUARD_STRATEGY" "$1"'
)


async def test_the_context_is_in_the_environment_and_the_argv() -> None:
    command = PreflightCommand(
        name="backup", argv=["sh", "-c", SCRIPT, "sh", "before-{version}-from-{previous_version}"]
    )
    [outcome] = await run_preflight([command], context=CONTEXT)
    assert outcome.ok, outcome.output_tail
    assert outcome.argv[-1] == "before-2.0.0-from-1.0.0"
    assert outcome.output_tail.startswith(
        "d20260101-000000-abcd|2.0.0|1.0.0|production|canary|before-2.0.0-from-1.0.0"
    )


async def test_other_braces_pass_through_and_a_first_deployment_has_no_previous() -> None:
    context = HookContext(
        deployment_id="d1",
        version="1.0.0",
        previous_version=None,
        environment="staging",
        strategy="direct",
    )
    command = PreflightCommand(
        name="check", argv=["printf", "%s %s %s", "{}", "{unknown}", "[{previous_version}]"]
    )
    [outcome] = await run_preflight([command], context=context)
    assert outcome.ok
    assert outcome.output_tail.startswith("{} {unknown} []")


def test_the_variables_are_named_rollguard_star() -> None:
    assert CONTEXT.env() == {
        "ROLLGUARD_DEPLOYMENT_ID": "d20260101-000000-abcd",
        "ROLLGUARD_VERSION": "2.0.0",
        "ROLLGUARD_PREVIOUS_VERSION": "1.0.0",
        "ROLLGUARD_ENVIRONMENT": "production",
        "ROLLGUARD_STRATEGY": "canary",
    }
