"""The leader lease against a real Redis: one leader at a time, takeover within the
lease after a leader dies, fencing tokens that only rise, no action from a non-holder,
and a leader cut off from Redis that steps down before anyone else can lead."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from coordinator.daemon.lease import Holder, Lease, LeaseError

pytestmark = pytest.mark.integration

TTL = 0.6
# Generous: the lease time plus a renewal interval plus scheduling slack on a busy CI.
TAKEOVER_BOUND = TTL + TTL / 3 + 2.0


@dataclass
class Node:
    """A Lease with its run loop as a task and every on_change call, timestamped."""

    lease: Lease
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    changes: list[tuple[float, bool, int]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def on_change(self, leader: bool, token: int) -> None:
        self.changes.append((time.monotonic(), leader, token))

    def start(self) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.lease.run(self.stop, self.on_change))

    async def kill(self) -> None:
        """Die without releasing: cancel the loop."""
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def shutdown(self) -> None:
        assert self.task is not None
        self.stop.set()
        async with asyncio.timeout(5):
            await self.task

    def leads(self) -> bool:
        return self.lease.is_leader

    def tokens_won(self) -> list[int]:
        return [token for _, leader, token in self.changes if leader]


@pytest.fixture
async def make_lease(redis_prefix: tuple[str, str]) -> AsyncIterator[Callable[..., Lease]]:
    url, prefix = redis_prefix
    made: list[Lease] = []

    def make(node: str, *, url: str = url, ttl: float = TTL) -> Lease:
        lease = Lease(url, prefix, node, ttl)
        made.append(lease)
        return lease

    yield make
    for lease in made:
        await lease.close()


async def until(predicate: Callable[[], bool], within: float) -> None:
    """Poll: the states under test are properties of the clock, not events to await."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"not within {within:.1f} s"
        await asyncio.sleep(0.01)


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


async def test_only_one_acquires(make_lease: Callable[..., Lease]) -> None:
    a, b = make_lease("node-a"), make_lease("node-b")
    assert await a.acquire()
    assert not await b.acquire()
    assert a.is_leader
    assert not b.is_leader
    assert a.token is not None
    assert b.token is None
    assert await a.holder() == Holder("node-a", a.token)
    assert await b.holder() == Holder("node-a", a.token)
    # Acquiring again while holding is a renewal, not a new term.
    token = a.token
    assert await a.acquire()
    assert a.token == token


async def test_renew_and_release_by_a_non_holder_do_nothing(
    make_lease: Callable[..., Lease],
) -> None:
    a, b = make_lease("node-a"), make_lease("node-b")
    assert await a.acquire()
    assert not await b.renew()
    assert not await b.release()
    assert a.is_leader
    assert (await b.holder()) == Holder("node-a", a.token or -1)
    assert await a.renew()
    assert await a.release()
    assert not a.is_leader
    assert await a.holder() is None
    assert await b.acquire()


async def test_token_floor_survives_a_redis_that_lost_its_counter(
    make_lease: Callable[..., Lease], redis_prefix: tuple[str, str]
) -> None:
    import redis

    url, prefix = redis_prefix
    a = make_lease("node-a")
    assert await a.acquire()
    assert await a.release()
    # As after a Redis restart without persistence: the counter is gone.
    with redis.Redis.from_url(url) as client:
        client.delete(f"{prefix}:fence")
    a.min_token = 41
    assert await a.acquire()
    assert a.token == 42
    assert await a.release()
    assert await a.acquire()
    assert a.token == 43


async def test_stale_holder_cannot_renew_or_release_the_next_term(
    make_lease: Callable[..., Lease],
) -> None:
    a, b = make_lease("node-a"), make_lease("node-b")
    assert await a.acquire()
    old = a.token
    assert old is not None
    # A stops renewing (a long GC pause, a frozen VM): its lease expires in Redis.
    await until(lambda: not a.is_leader, within=TTL)
    await asyncio.sleep(TTL)
    assert await b.acquire()
    assert b.token is not None
    assert b.token > old
    assert a.token is None, "past its deadline a leader must not hand out its token"
    assert not await a.renew()
    assert not await a.release()
    assert await b.holder() == Holder("node-b", b.token)


async def test_run_elects_one_and_the_standby_takes_over_after_a_death(
    make_lease: Callable[..., Lease],
) -> None:
    a, b = Node(make_lease("node-a")), Node(make_lease("node-b"))
    a.start()
    b.start()
    try:
        await until(lambda: a.lease.is_leader or b.lease.is_leader, within=TAKEOVER_BOUND)
        # Several renewal rounds: the leader keeps it, the standby stays standby.
        await asyncio.sleep(TTL * 2)
        assert a.lease.is_leader != b.lease.is_leader
        leader, standby = (a, b) if a.lease.is_leader else (b, a)
        assert len(leader.tokens_won()) == 1
        assert standby.changes == []

        await leader.kill()
        died = time.monotonic()
        await until(lambda: standby.lease.is_leader, within=TAKEOVER_BOUND)
        assert time.monotonic() - died < TAKEOVER_BOUND
        assert standby.tokens_won()[0] > leader.tokens_won()[0]
        # The killed node was told it no longer leads.
        assert leader.changes[-1][1] is False
    finally:
        for node in (a, b):
            if node.task is not None and not node.task.done():
                await node.shutdown()


async def test_fencing_tokens_rise_across_takeovers(make_lease: Callable[..., Lease]) -> None:
    a, b = Node(make_lease("node-a")), Node(make_lease("node-b"))
    a.start()
    await until(lambda: a.lease.is_leader, within=TAKEOVER_BOUND)
    b.start()
    tokens = [a.lease.token]
    current, other = a, b
    try:
        for _ in range(3):
            await current.kill()
            await until(other.leads, within=TAKEOVER_BOUND)
            tokens.append(other.lease.token)
            current.start()  # reborn as the standby
            current, other = other, current
    finally:
        for node in (a, b):
            if node.task is not None and not node.task.done():
                await node.shutdown()
    won = [t for t in tokens if t is not None]
    assert len(won) == len(tokens)
    assert won == sorted(won)
    assert len(set(tokens)) == len(tokens), f"tokens must strictly increase: {tokens}"


async def test_graceful_stop_hands_over_at_once(make_lease: Callable[..., Lease]) -> None:
    a, b = Node(make_lease("node-a")), Node(make_lease("node-b"))
    a.start()
    await until(lambda: a.lease.is_leader, within=TAKEOVER_BOUND)
    b.start()
    try:
        await a.shutdown()
        assert a.changes[-1][1] is False
        assert await b.lease.holder() in (None, Holder("node-b", b.lease.token or -1))
        # Released, not expired: the standby needs one acquire interval, not a lease.
        await until(lambda: b.lease.is_leader, within=TTL / 3 + 1.0)
    finally:
        await b.shutdown()
    assert b.changes[-1][1] is False
    assert await b.lease.holder() is None


async def test_cancellation_is_never_swallowed(make_lease: Callable[..., Lease]) -> None:
    """redis-py can swallow a cancel that lands mid-command; the lease must not, or a
    cancelled loop would keep renewing a lease nobody acts on."""
    lease = make_lease("node-a")
    await lease.holder()  # connected, so the cancels land in commands, not in connect
    swallowed = 0
    for i in range(200):
        task = asyncio.create_task(lease.holder())
        await asyncio.sleep((i % 20) * 0.00005)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            continue
        if task.cancelling():
            swallowed += 1
    assert swallowed == 0


async def test_unreachable_redis_never_leads_and_never_hangs(
    make_lease: Callable[..., Lease], closed_port: int
) -> None:
    lost = Node(make_lease("node-c", url=f"redis://127.0.0.1:{closed_port}/0"))
    with pytest.raises(LeaseError):
        async with asyncio.timeout(2):
            await lost.lease.acquire()
    with pytest.raises(LeaseError):
        async with asyncio.timeout(2):
            await lost.lease.holder()
    assert not lost.lease.is_leader
    lost.start()
    await asyncio.sleep(TTL * 2)
    assert not lost.lease.is_leader
    assert lost.changes == []
    started = time.monotonic()
    await lost.shutdown()
    assert time.monotonic() - started < 2


class BlackholeProxy:
    """A TCP proxy to Redis that can go silent: it keeps connections open but stops
    passing bytes, the worst kind of outage (no error, just no answer)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = False
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if not self.silent:
                writer.write(data)
                await writer.drain()
        writer.close()

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_leader_cut_off_from_redis_steps_down_before_the_standby_leads(
    make_lease: Callable[..., Lease], redis_prefix: tuple[str, str]
) -> None:
    url, _ = redis_prefix
    redis_port = int(url.rsplit(":", 1)[1].split("/")[0])
    proxy = BlackholeProxy(redis_port)
    await proxy.start()
    a = Node(make_lease("node-a", url=f"redis://127.0.0.1:{proxy.port}/0"))
    b = Node(make_lease("node-b"))
    try:
        a.start()
        await until(lambda: a.lease.is_leader, within=TAKEOVER_BOUND)
        b.start()
        await asyncio.sleep(TTL)
        assert a.lease.is_leader
        assert not b.lease.is_leader

        proxy.silent = True
        cut = time.monotonic()
        await until(lambda: b.lease.is_leader, within=TAKEOVER_BOUND)
        assert not a.lease.is_leader
        [(_, _, a_token), (a_lost, a_state, a_lost_token)] = a.changes
        [(b_won, b_state, b_token)] = b.changes
        assert a_state is False
        assert a_lost_token == a_token
        assert b_state is True
        assert b_token > a_token
        # The point of the margin: A stopped acting before B started.
        assert cut < a_lost < b_won
        # A's loop is not stuck on the silent connection.
        started = time.monotonic()
        await a.shutdown()
        assert time.monotonic() - started < 2
        assert a.changes[-1][1] is False
    finally:
        for node in (a, b):
            if node.task is not None and not node.task.done():
                await node.shutdown()
        await proxy.close()


async def test_from_config(redis_prefix: tuple[str, str]) -> None:
    from shared.config.coordinator import HaConfig
    from shared.errors import ConfigError

    url, prefix = redis_prefix
    lease = Lease.from_config(HaConfig(redis_url=url, lease_ttl=3.0, key_prefix=prefix), "c1")
    try:
        assert lease.key == f"{prefix}:leader"
        assert lease.ttl == 3.0
        assert lease.interval == 1.0
        assert await lease.acquire()
        assert await lease.holder() == Holder("c1", lease.token or -1)
    finally:
        await lease.close()
    with pytest.raises(ConfigError):
        Lease.from_config(HaConfig(), "c1")
