"""``rollguard demo`` from the wheel, as the README tells people to install it: the wheel
is built from the checkout, installed into a fresh virtual environment outside it, and
the demo runs from a directory that is not the checkout, with nothing of the checkout
on the path. It needs the broker config and ACL that ship inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from coordinator.devfleet.broker import mosquitto_binary
from tests.conftest import service_missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LEFT_OUT = (
    ".git",
    ".venv",
    "build",
    "*.egg-info",
    ".demo",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
)


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        service_missing("the mosquitto binary")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROLLGUARD_", "PYTHON", "VIRTUAL_ENV"))
    }
    # Built from a copy of the sources: setuptools packs whatever a previous build left
    # in build/, so a module removed since would ride along from the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*LEFT_OUT))
    wheels = tmp_path / "wheels"
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), "."],
        cwd=source,
        env=env,
        timeout=300,
    )
    [wheel] = wheels.glob("rollguard-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "coordinator/devfleet/mosquitto/mosquitto.conf" in names
    assert "coordinator/devfleet/mosquitto/acl" in names
    modules = {n for n in names if n.endswith(".py")}
    tracked = {
        str(path.relative_to(ROOT))
        for package in ("agent", "coordinator", "shared")
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules == tracked

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env, timeout=120)
    run(
        # The demo runs a coordinator: the wheel with the coordinator's extra.
        [str(venv / "bin" / "pip"), "install", "--quiet", f"{wheel}[coordinator]"],
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    # The installed package, not the checkout, answers.
    where = run(
        [str(venv / "bin" / "python"), "-c", "import coordinator; print(coordinator.__file__)"],
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert where.strip().startswith(str(venv)), where

    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    out = run(
        [str(venv / "bin" / "rollguard"), "demo", "--dir", str(elsewhere / "demo")],
        cwd=elsewhere,
        env=env,
        timeout=300,
    )
    assert "=> 2.0.0: completed through every step" in out
    assert "=> 2.1.0: rolled back on its own: error_rate" in out
    assert "stopped every process" in out
