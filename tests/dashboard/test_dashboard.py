"""The live dashboard in headless Chromium against a real coordinator and fleet: the
login keeps the token in an HttpOnly, SameSite=Strict cookie; the page shows the fleet
and the running canary; the canary-versus-baseline chart moves as samples arrive; a
request the engine refuses shows its reasons; a rollback pressed on the page rolls the
fleet back; the report opens from the page."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from coordinator.devfleet.broker import mosquitto_binary
from coordinator.devfleet.fleet import DevFleet, wait_for
from tests.conftest import service_missing
from tests.dashboard.conftest import HOSTS, token

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield made
    made.close()


def log_in(page: Page, fleet: DevFleet) -> None:
    page.goto(fleet.api.base + "/dashboard/")
    assert page.url == fleet.api.base + "/login"
    page.fill("#token", token(fleet))
    page.fill("#name", "alice")
    page.click("button[type=submit]")
    page.wait_for_url(fleet.api.base + "/dashboard/")


def post(fleet: DevFleet, path: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        fleet.api.base + path, data=b"{}", method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)


def test_the_login_keeps_the_token_in_a_strict_httponly_cookie(
    context: BrowserContext, fleet: DevFleet
) -> None:
    page = context.new_page()
    page.goto(fleet.api.base + "/dashboard/")
    assert page.url == fleet.api.base + "/login"
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    page.wait_for_url("**/login?failed=1")
    assert page.is_visible("#failed")
    assert context.cookies() == []

    page.fill("#token", token(fleet))
    page.click("button[type=submit]")
    page.wait_for_url(fleet.api.base + "/dashboard/")
    [cookie] = context.cookies()
    assert cookie["name"] == "rollguard_token"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert token(fleet) not in page.url
    assert token(fleet) not in page.evaluate("document.cookie")
    page.wait_for_selector("#fleet-headline:has-text('hosts online')")
    assert f"{len(HOSTS)} of {len(HOSTS)} hosts online" in page.inner_text("#fleet-headline")
    assert page.locator("#hosts tbody tr").count() == len(HOSTS)


def test_a_post_with_the_cookie_alone_must_come_from_the_page(fleet: DevFleet) -> None:
    cookie = {"Cookie": f"rollguard_token={token(fleet)}", "Content-Type": "application/json"}
    path = "/api/v1/deployments/d-unknown/pause"
    assert post(fleet, path, cookie) == 403
    evil = {**cookie, "X-Rollguard-Request": "dashboard", "Origin": "http://evil.example"}
    assert post(fleet, path, evil) == 403
    # From the page (its header, its origin) it reaches the API: an unknown deployment.
    own = {**cookie, "X-Rollguard-Request": "dashboard", "Origin": fleet.api.base}
    assert post(fleet, path, own) == 404
    # No cookie, no bearer: 401.
    assert post(fleet, path, {"X-Rollguard-Request": "dashboard"}) == 401


def test_watch_a_canary_and_roll_it_back_from_the_page(
    context: BrowserContext, fleet: DevFleet, tmp_path: Path
) -> None:
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    log_in(page, fleet)

    started = fleet.deploy("2.0.0")
    deployment_id = started["id"]
    wait_for(lambda: fleet.deployment(deployment_id)["state"] == "baking", 60, "the canary to bake")
    page.wait_for_selector(f"#deployment-title:has-text('{deployment_id}')", timeout=30_000)
    page.wait_for_selector("#deployment [data-state=baking]", timeout=30_000)

    # The chart moves as samples arrive: more windows, live, without a reload.
    # (Polled from here: the page's Content-Security-Policy allows no evaluated script.)
    def points() -> int:
        return int(page.get_attribute("#chart", "data-points") or 0)

    before = wait_for(points, 30, "the chart's first analysis window")
    wait_for(lambda: points() > before, 30, "the chart to move as samples arrive")
    # The canary's own line (a window without its requests yet draws the baseline only).
    canary = page.locator("#chart polyline.canary, #chart circle.canary")
    wait_for(lambda: canary.count() >= 1, 30, "the canary's line on the chart")
    assert page.locator("#decisions li").count() >= 1

    # Approve does not apply while the step bakes: the engine's reasons are shown.
    page.click("#actions button[data-action=approve]")
    page.fill("#confirm-reason", "trying the wrong button")
    page.click("#confirm-ok")
    page.wait_for_selector("#action-result.error", timeout=15_000)
    assert "approve refused" in page.inner_text("#action-result")
    assert page.locator("#action-result li").count() >= 1
    assert fleet.deployment(deployment_id)["state"] == "baking"

    page.screenshot(path=str(tmp_path / "dashboard-1400.png"), full_page=True)

    # Cancel changes nothing; a confirmed rollback rolls the fleet back.
    page.click("#actions button[data-action=rollback]")
    page.click("#confirm-cancel")
    assert fleet.deployment(deployment_id)["state"] == "baking"
    page.click("#actions button[data-action=rollback]")
    assert "1.0.0" in page.inner_text("#confirm-text")
    page.fill("#confirm-reason", "p95 looks worse on the page")
    page.click("#confirm-ok")
    page.wait_for_selector("#action-result.ok", timeout=15_000)
    final = wait_for(
        lambda: (d := fleet.deployment(deployment_id))["state"] == "rolled_back" and d,
        60,
        "the rollback",
    )
    assert final["rollback_reason"]
    assert {h: fleet.linked_version(h) for h in HOSTS} == dict.fromkeys(HOSTS, "1.0.0")
    page.wait_for_selector("#deployment [data-state=rolled_back]", timeout=30_000)
    rollback = page.locator("#decisions li[data-kind='operator.rollback']").first
    assert "alice (dashboard)" in rollback.inner_text()
    rollback.locator("summary").click()
    assert "p95 looks worse on the page" in rollback.locator("pre").inner_text()
    assert page.locator("#history tbody tr").count() >= 1

    # The report opens from the page.
    with page.expect_navigation():
        page.click("#deployment a:has-text('open the report')")
    assert deployment_id in page.content()
    # The refused approve is the only failed request (the browser logs its 409).
    assert [e for e in errors if "409 (Conflict)" not in e] == [], errors


def test_firing_alerts_are_on_the_page_with_who_was_told(browser: Browser, tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")
    # Every host's memory is over 1 %: each fires a memory alert; no webhook is set.
    extra = {"alerts": {"memory_percent": 1.0}}
    with DevFleet(tmp_path / "alerting", ["db-1", "db-2"], coordinator_extra=extra) as fleet:
        fleet.wait_ready(60)
        wait_for(lambda: len(fleet.api.get("/api/v1/alerts")["alerts"]) >= 2, 40, "two alerts")
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        try:
            page = context.new_page()
            log_in(page, fleet)
            page.wait_for_selector("#alerts tbody tr.firing", timeout=30_000)
            rows = page.locator("#alerts tbody tr.firing")
            assert rows.count() == 2
            text = page.inner_text("#alerts")
            assert "FIRING" in text
            assert "memory" in text
            assert "db-1" in text
            assert "log" in text  # no webhook: the journal is who was told
            assert "2 firing" in page.inner_text("#alerts-count")
        finally:
            context.close()
