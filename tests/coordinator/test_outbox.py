from __future__ import annotations

import random

from coordinator.daemon.outbox import Outbox, signed_command
from shared.messages import Command, decode
from shared.signing import generate_keypair, load_private_key, load_public_key, verify


def outbox() -> Outbox:
    return Outbox(first_retry=1.0, max_retry=8.0, rng=random.Random(1))


def test_unanswered_commands_are_republished_with_backoff_and_same_bytes() -> None:
    box = outbox()
    box.add("cmd-00000001", "web-1", b"payload", expires=1000.0, now=0.0)
    assert box.due(0.5) == []
    times: list[float] = []
    now = 0.0
    while len(times) < 5:
        now += 0.05
        for command_id, host, payload in box.due(now):
            assert (command_id, host, payload) == ("cmd-00000001", "web-1", b"payload")
            times.append(now)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    # Roughly 1, 2, 4, 8, 8 seconds (+-20 % jitter): doubling, capped.
    for gap, expected in zip(gaps, [1, 2, 4, 8, 8], strict=True):
        assert expected * 0.8 - 0.05 <= gap <= expected * 1.2 + 0.05


def test_accepted_commands_are_not_republished_and_results_end_them() -> None:
    box = outbox()
    box.add("cmd-00000001", "web-1", b"a", expires=1000.0, now=0.0)
    box.add("cmd-00000002", "web-2", b"b", expires=1000.0, now=0.0)
    box.accepted("cmd-00000001")
    assert [c for c, _, _ in box.due(2.0)] == ["cmd-00000002"]
    assert box.finished("cmd-00000001") == 0.0
    assert box.finished("cmd-00000001") is None
    assert len(box) == 1


def test_expired_commands_are_dropped_not_resent() -> None:
    box = outbox()
    box.add("cmd-00000001", "web-1", b"a", expires=3.0, now=0.0)
    assert len(box.due(1.3)) == 1
    assert box.due(100.0) == []
    assert len(box) == 0 and box.next_due() is None


def test_adding_the_same_id_twice_is_a_no_op() -> None:
    box = outbox()
    box.add("cmd-00000001", "web-1", b"a", expires=100.0, now=0.0)
    box.add("cmd-00000001", "web-1", b"other", expires=100.0, now=5.0)
    assert box.due(1.3) == [("cmd-00000001", "web-1", b"a")]


def test_after_a_reconnect_every_unanswered_command_is_published_once_more() -> None:
    box = outbox()
    box.add("cmd-00000001", "web-1", b"a", expires=100.0, now=0.0)
    box.add("cmd-00000002", "web-2", b"b", expires=100.0, now=0.0)
    box.add("cmd-00000003", "web-3", b"c", expires=5.0, now=0.0)
    box.add("cmd-00000004", "web-4", b"d", expires=100.0, now=0.0)
    box.accepted("cmd-00000002")  # its result may have been lost with the old session
    box.finished("cmd-00000004")
    assert sorted(box.unanswered(6.0)) == [
        ("cmd-00000001", "web-1", b"a"),
        ("cmd-00000002", "web-2", b"b"),
    ]
    # The backoff schedule is untouched: an accepted command is still not re-published.
    assert sorted(c for c, _, _ in box.due(1.3)) == ["cmd-00000001", "cmd-00000003"]


def test_signed_commands_verify_and_expire_after_the_ttl(tmp_path) -> None:  # type: ignore[no-untyped-def]
    private, public = generate_keypair(tmp_path)
    command = signed_command(
        load_private_key(private),
        command_id="cmd-00000001",
        host="web-1",
        deployment="d1",
        action="deploy",
        version="2.0.0",
        slot=None,
        now=100.0,
        ttl=60.0,
        fencing=3,
    )
    box = outbox()
    payload = box.add_command(command, now=100.0)
    decoded = decode(Command, payload)
    verify(decoded, load_public_key(public))
    assert (decoded.expires, decoded.fencing) == (160.0, 3)
