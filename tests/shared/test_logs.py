"""Journald priority prefixes: only when stderr is the stream JOURNAL_STREAM names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import logs

_CODE = (
    "import logging\n"
    "from shared import logs\n"
    "logs.setup('debug', {fmt!r})\n"
    "log = logging.getLogger('t')\n"
    "log.debug('d'); log.info('i'); log.warning('w'); log.error('e'); log.critical('c')\n"
    "try:\n"
    "    raise ValueError('boom')\n"
    "except ValueError:\n"
    "    log.exception('failed')\n"
)


def run(tmp_path: Path, *, fmt: str, journal: str | None) -> list[str]:
    out = tmp_path / f"stderr-{fmt}-{journal is not None}.log"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with out.open("w") as fh:
        if journal == "match":
            st = os.fstat(fh.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal is not None:
            env["JOURNAL_STREAM"] = journal
        subprocess.run(
            [sys.executable, "-c", _CODE.format(fmt=fmt)],
            stderr=fh,
            env=env,
            check=True,
            timeout=60,
        )
    return out.read_text().splitlines()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_lines_carry_their_priority_when_stderr_is_the_journal(tmp_path: Path, fmt: str) -> None:
    lines = run(tmp_path, fmt=fmt, journal="match")
    assert [line[:3] for line in lines[:5]] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    # A traceback's every line keeps its record's priority (JSON keeps it in one line).
    assert len(lines) > 6 if fmt == "text" else len(lines) == 6
    assert all(line.startswith("<3>") for line in lines[5:])
    assert any("ValueError: boom" in line for line in lines[5:])


@pytest.mark.parametrize("journal", [None, "1:2", "garbage"])
def test_no_prefix_when_stderr_is_not_the_journal(tmp_path: Path, journal: str | None) -> None:
    lines = run(tmp_path, fmt="text", journal=journal)
    assert lines
    assert not any(line.startswith("<") for line in lines)


def test_priorities_follow_sd_daemon() -> None:
    assert [logs.priority(n) for n in (10, 20, 30, 40, 50)] == [7, 6, 4, 3, 2]
