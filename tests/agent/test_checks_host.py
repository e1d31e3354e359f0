"""cpu, memory, disk and system checks against this machine's real /proc and mounts."""

from __future__ import annotations

import asyncio
import time

from agent.checks.cpu import CpuCheck
from agent.checks.disk import DiskCheck
from agent.checks.memory import MemoryCheck
from agent.checks.system import SystemCheck
from tests.agent.conftest import RecordingSink


async def test_cpu_reports_percent_over_at_least_half_a_second(sink: RecordingSink) -> None:
    check = CpuCheck(interval=60, timeout=5)
    before = time.time()
    await check.collect(sink)
    sample = sink.only("cpu")
    assert sample.ok and sample.error is None
    assert before <= sample.time <= time.time()
    assert 0.0 <= sample.values["percent"] <= 100.0
    assert sample.values["cores"] >= 1
    assert {"user", "system", "iowait", "steal"} <= set(sample.values)


async def test_memory_reports_percent_and_bytes(sink: RecordingSink) -> None:
    await MemoryCheck(interval=60, timeout=5).collect(sink)
    sample = sink.only("memory")
    assert sample.ok
    assert 0.0 < sample.values["percent"] < 100.0
    assert 0 < sample.values["available_bytes"] <= sample.values["total_bytes"]
    assert set(sample.values) == {
        "percent",
        "total_bytes",
        "available_bytes",
        "used_bytes",
        "swap_percent",
    }


async def test_disk_reports_each_mount_and_the_worst_as_percent(sink: RecordingSink) -> None:
    await DiskCheck(interval=300, timeout=5, mounts=["/", "/tmp", "/dev/shm"]).collect(sink)
    sample = sink.only("disk")
    assert sample.ok and sample.error is None
    per_mount = [sample.values[f"percent:{m}"] for m in ("/", "/tmp", "/dev/shm")]
    assert sample.values["percent"] == max(per_mount)
    assert sample.values["free_bytes:/"] <= sample.values["total_bytes:/"]


async def test_disk_names_the_mount_that_fails_and_keeps_the_others(
    sink: RecordingSink,
) -> None:
    await DiskCheck(interval=300, timeout=5, mounts=["/", "/no/such/mount"]).collect(sink)
    sample = sink.only("disk")
    assert sample.ok is False
    assert sample.error == "/no/such/mount: no such file or directory"
    assert "percent:/" in sample.values and sample.values["percent"] == sample.values["percent:/"]


async def test_disk_mount_blocked_in_statvfs_times_out_alone_and_stays_reported(
    sink: RecordingSink, monkeypatch: object
) -> None:
    import threading

    import agent.checks.disk as disk

    release = threading.Event()
    real = disk._measure

    def measure(mount: str) -> tuple[float, int, int]:
        if mount == "/hung":
            release.wait(10)  # a dead NFS server: statvfs blocks in the kernel
        return real("/")

    monkeypatch.setattr(disk, "_measure", measure)  # type: ignore[attr-defined]
    check = DiskCheck(interval=1.0, timeout=0.5, mounts=["/", "/hung"])
    await check.collect(sink)
    first = sink.samples[-1]
    assert first.ok is False
    assert first.error == "/hung: statvfs timed out after 0.45s"
    assert "percent:/" in first.values
    await check.collect(sink)
    assert sink.samples[-1].error == "/hung: statvfs is still blocked since an earlier run"
    release.set()
    await asyncio.sleep(0.1)
    await check.collect(sink)
    assert sink.samples[-1].ok is True


async def test_system_reports_load_then_network_deltas(sink: RecordingSink) -> None:
    check = SystemCheck(interval=60, timeout=5)
    await check.collect(sink)
    first = sink.samples[-1]
    assert first.ok
    assert {"load1", "load5", "load15", "load1_per_core"} <= set(first.values)
    assert "bytes_sent" not in first.values  # no interval yet
    await asyncio.sleep(0.05)
    await check.collect(sink)
    second = sink.samples[-1]
    for name in (
        "bytes_sent",
        "bytes_recv",
        "errin",
        "errout",
        "dropin",
        "dropout",
        "bytes_sent_per_s",
        "bytes_recv_per_s",
    ):
        assert second.values[name] >= 0, name
