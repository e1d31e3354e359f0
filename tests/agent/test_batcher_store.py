"""Batches: one per tick, sequence numbers that survive restarts, drop-oldest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.batcher import BATCH_BYTES, Batcher
from agent.store import Store
from shared.messages import MetricBatch, Sample, decode


def sample(check: str = "cpu", t: float = 1.0, **values: float) -> Sample:
    return Sample(check=check, time=t, ok=True, values=values or {"percent": 1.0})


def batcher(
    store: Store, *, linger: float = 0.05, max_batches: int = 100
) -> tuple[Batcher, list[int]]:
    woken: list[int] = []
    return (
        Batcher(
            host="host-a",
            store=store,
            max_batches=max_batches,
            linger=linger,
            session=lambda: 7,
            on_sealed=lambda: woken.append(1),
        ),
        woken,
    )


def drain(store: Store) -> list[MetricBatch]:
    out = []
    while (item := store.oldest_batch()) is not None:
        out.append(decode(MetricBatch, item[1]))
        store.ack_batch(item[0])
    return out


async def test_samples_of_one_tick_travel_in_one_batch(state_dir: Path) -> None:
    store = Store.open(state_dir)
    b, woken = batcher(store)
    b.emit(sample("cpu"))
    b.emit(sample("memory"))
    await asyncio.sleep(0.1)
    b.emit(sample("disk"))
    await asyncio.sleep(0.1)
    batches = drain(store)
    assert [[s.check for s in x.samples] for x in batches] == [["cpu", "memory"], ["disk"]]
    assert [x.seq for x in batches] == [1, 2]
    assert {x.session for x in batches} == {7} and len(woken) == 2


async def test_sequence_numbers_continue_after_a_restart(state_dir: Path) -> None:
    store = Store.open(state_dir)
    b, _ = batcher(store)
    b.emit(sample())
    b.seal()
    assert [x.seq for x in drain(store)] == [1]
    store.close()
    reopened = Store.open(state_dir)
    b, _ = batcher(reopened)
    b.emit(sample())
    b.seal()
    assert [x.seq for x in drain(reopened)] == [2]


async def test_full_buffer_drops_the_oldest_and_counts_them(state_dir: Path) -> None:
    store = Store.open(state_dir)
    b, _ = batcher(store, max_batches=3)
    for i in range(5):
        b.emit(sample(t=float(i)))
        b.seal()
    assert store.dropped == 2
    kept = drain(store)
    assert [x.seq for x in kept] == [3, 4, 5]
    assert [x.samples[0].time for x in kept] == [2.0, 3.0, 4.0]


async def test_a_big_tick_is_split_below_the_payload_limit(state_dir: Path) -> None:
    store = Store.open(state_dir)
    b, _ = batcher(store)
    big = Sample(check="application", time=1.0, ok=True, latencies_ms=[123.456] * 1500)
    for _ in range(6):
        b.emit(big)
    b.seal()
    payload_sizes = []
    while (item := store.oldest_batch()) is not None:
        payload_sizes.append(len(item[1]))
        decode(MetricBatch, item[1])  # each one passes the wire's own checks
        store.ack_batch(item[0])
    assert len(payload_sizes) > 1 and max(payload_sizes) <= BATCH_BYTES + 4096


async def test_a_sample_the_wire_would_refuse_is_replaced_by_its_failure(
    state_dir: Path,
) -> None:
    store = Store.open(state_dir)
    b, _ = batcher(store)
    b.emit(Sample(check="disk", time=5.0, ok=True, values={"x" * 80: 1.0}))
    b.seal()
    (batch,) = drain(store)
    (replaced,) = batch.samples
    assert (replaced.check, replaced.time, replaced.ok) == ("disk", 5.0, False)
    assert replaced.error is not None and replaced.error.startswith("invalid sample: ")


def test_session_counter_rises_and_persists(state_dir: Path) -> None:
    store = Store.open(state_dir)
    assert [store.next_session(), store.next_session()] == [1, 2]
    store.close()
    assert Store.open(state_dir).next_session() == 3


def test_command_records_are_bounded_and_keep_the_first_result(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.store as store_module

    store = Store.open(state_dir)
    store.begin_command("cmd-00000001", "d1", b"accepted")
    assert store.command("cmd-00000001") == ("d1", None)
    assert store.unfinished_commands() == [("cmd-00000001", "d1")]
    store.remember_command("cmd-00000001", "d1", b"first")
    store.remember_command("cmd-00000001", "d1", b"second")
    assert store.command("cmd-00000001") == ("d1", b"first")
    results = []
    while (item := store.oldest_result()) is not None:
        results.append(item[1])
        store.ack_result(item[0])
    assert results == [b"accepted", b"first", b"second"]
    monkeypatch.setattr(store_module, "COMMANDS_KEPT", 3)
    for i in range(5):
        store.remember_command(f"cmd-1000000{i}", "d", b"r")
    assert store.command("cmd-00000001") is None
    assert store.command("cmd-10000004") == ("d", b"r")
