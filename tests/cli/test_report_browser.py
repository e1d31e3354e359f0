"""``rollguard report`` of a real rolled-back deployment (the bad version deployed on a
fleet of real processes), in its three forms, and its HTML rendered by headless
Chromium: a non-trivial screenshot, the verdict table and the chart's panels in the
DOM, no console errors."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coordinator.devfleet.fleet import DevFleet
from tests.cli.conftest import HOSTS
from tests.cli.run import rollguard
from tests.conftest import service_missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium() -> str:
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if path is None:
        service_missing("chromium (Debian package chromium)")
    assert path is not None
    return path


def run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def reports(
    fleet: DevFleet, rolled_back: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    assert rolled_back["result"].returncode == 3, rolled_back["result"].stderr
    out = tmp_path_factory.mktemp("reports")
    ident = rolled_back["id"]
    paths = {}
    for fmt, argv in {
        "html": ["-o", str(out / "report.html")],
        "md": ["--format", "md", "-o", str(out / "report.txt")],
        "json": ["-o", str(out / "report.json")],  # the format follows the suffix
    }.items():
        result = rollguard("report", ident, *argv, fleet=fleet)
        assert result.returncode == 0, result.stderr
        path = Path(argv[-1])
        assert result.stdout.strip() == f"report of {ident} (rolled back) written to {path}"
        paths[fmt] = path
    return paths


def test_the_three_forms_tell_the_same_story(
    fleet: DevFleet, rolled_back: dict[str, Any], reports: dict[str, Path]
) -> None:
    ident = rolled_back["id"]
    data = json.loads(reports["json"].read_text())
    summary = data["summary"]
    stable = summary["rollback_version"]
    assert summary["id"] == ident
    assert summary["state"] == "rolled_back"
    assert summary["outcome"].startswith(f"Rolled back to {stable} automatically")
    assert "error_rate" in summary["rollback_reason"]
    fail = next(e for e in data["timeline"] if e["kind"] == "deployment.fail")
    assert fail["marked"] and fail["label"] == "rollback: error_rate"
    assert fail["rules"][0]["rule"] == "error_rate" and fail["rules"][0]["verdict"] == "fail"
    judged = [j for j in data["judged"] if j["number"] == fail["number"]]
    canary = next(j for j in judged if j["cohort"] == "canary")
    assert canary["verdict"] == "fail" and canary["lower"] > data["thresholds"]["error_rate"]
    assert data["thresholds"]["error_rate"] == 0.01
    # The verdict table: the failing rule on top, every gauge beside it.
    verdicts = data["verdicts"]
    assert verdicts["number"] == fail["number"]
    top = verdicts["rows"][0]
    assert (top["rule"], top["verdict"]) == ("error_rate", "fail")
    assert top["canary_value"] > top["threshold_value"] == 0.01
    rows = {row["rule"]: row for row in verdicts["rows"]}
    # The real agents' gauges, each with its row (the rollback is over before an analysis
    # window closes with them: the rows say what the rule counted). A gauge not measured
    # yet in the window when the error rate decides (disk: every 2 s here) says so.
    for gauge in ("cpu", "memory", "disk"):
        row = rows[gauge]
        if row["verdict"] == "no_data":
            assert row["canary"] == "no samples", row
        else:
            assert row["verdict"] == "pass", row
            assert row["canary"].startswith(("peak ", "no host over (")), row
    assert {h["host"] for h in data["hosts"]} == set(HOSTS)
    assert all(h["now_version"] == stable and h["ok"] for h in data["hosts"])
    assert any(h["rollback"] for h in data["hosts"])

    markdown = reports["md"].read_text()
    assert markdown.startswith("# rollguard report: 2.1.0 to production by canary — rolled back")
    assert f"Rolled back to {stable} automatically" in markdown
    assert "## Timeline" in markdown and "`deployment.fail`" in markdown
    assert "## Verdicts" in markdown and "| `error_rate` | " in markdown

    html = reports["html"].read_text()
    assert "<svg" in html and summary["outcome"].split(":")[0] in html

    stdout = rollguard("report", ident, "--format", "md", "-o", "-", fleet=fleet)
    assert stdout.returncode == 0
    assert stdout.stdout.splitlines()[0] == markdown.splitlines()[0]


def test_the_html_renders_in_chromium_without_errors(
    reports: dict[str, Path], tmp_path: Path
) -> None:
    page = reports["html"]
    screenshot = tmp_path / "report.png"
    shot = run_chromium(
        page, tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1400,2000"
    )
    assert screenshot.exists(), shot.stderr[-2000:]
    assert png_size(screenshot) == (1400, 2000)
    # A blank page compresses to a few kilobytes; the report with its chart does not.
    assert screenshot.stat().st_size > 60_000
    assert console_messages(shot.stderr) == []

    dom = run_chromium(page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") == 1
    # The failing decision's judged window is drawn (a diamond), whatever else is.
    assert '<path d="M' in dom.stdout
    assert "Canary versus baseline" in dom.stdout
    assert 'id="verdicts"' in dom.stdout and "<td><code>error_rate</code></td>" in dom.stdout
    for title in ("CPU, highest host", "Memory, highest host", "Disk (fullest mount)"):
        assert title in dom.stdout
    assert 'id="timeline"' in dom.stdout and 'id="hosts"' in dom.stdout
    assert console_messages(dom.stderr) == []
    # Keep the picture next to the report, for a person to look at.
    shutil.copy(screenshot, page.with_suffix(".png"))


def test_console_errors_would_be_caught(tmp_path: Path) -> None:
    """The check above means something: a page that logs an error is caught."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('boom'); missing();</script></body></html>")
    result = run_chromium(page, tmp_path / "profile", "--dump-dom")
    messages = console_messages(result.stderr)
    assert any("boom" in m for m in messages)
    assert any("missing is not defined" in m for m in messages)
