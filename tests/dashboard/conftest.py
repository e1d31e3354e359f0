"""Fixtures for the dashboard's browser tests: Debian's chromium driven by Playwright
(no browser is ever downloaded), and a real fleet whose canary bakes long enough for
a person to act on the page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from coordinator.devfleet.broker import mosquitto_binary
from coordinator.devfleet.fleet import DevFleet
from tests.conftest import service_missing

HOSTS = ["web-1", "web-2", "web-3", "web-4"]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
# The canary's first step bakes for ten minutes: the test acts before it ends.
COORDINATOR: dict[str, Any] = {
    "environments": {
        "production": {"canary": {"first_bake": 600.0, "step_bake": 600.0, "post_watch": 600.0}}
    }
}


def chromium_path() -> str:
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if path is None:
        service_missing("chromium (Debian package chromium)")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevFleet]:
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")
    directory = tmp_path_factory.mktemp("dashboard-fleet")
    with DevFleet(directory, HOSTS, coordinator_extra=COORDINATOR) as started:
        started.wait_ready(60)
        yield started


def token(fleet: DevFleet) -> str:
    return fleet.api.token_path.read_text(encoding="utf-8").strip()
