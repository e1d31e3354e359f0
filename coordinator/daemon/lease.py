"""Active/standby leadership: a leader lease in Redis with a fencing token.

Theory of operation. The lease is one key, ``{prefix}:leader``, set if absent with an
expiry of ``ttl``; its value names the node and the term. Each acquisition also takes
the next number from ``{prefix}:fence`` in the same Lua script, so terms and tokens
are one and the same: a later leader always holds a larger token, and the store can
refuse writes carrying a smaller one.

Safety rests on the leader's own clock, never on Redis answering. A renewal sent at
local time ``t`` that succeeds keeps the key alive until at least ``t + ttl`` on the
Redis side, so no other node can acquire before then; the leader believes in its lease
only until ``t + ttl - margin`` and steps down at that moment whether or not Redis
answers. Every Redis call is bounded by a timeout that never outlasts the remaining
lease, and the loop wakes for the deadline, so a hung connection cannot keep a leader
acting past it. The margin covers clock-rate drift and the time the daemon needs to
stop acting after ``on_change(False, ...)``; the fencing token covers everything a
margin cannot (a process paused for longer than the lease).

Limits: a single Redis (or a primary with Sentinel, accepting that a failover may lose
the key); not Redis Cluster, whose two keys would live in different slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from shared.config.coordinator import HaConfig
from shared.errors import ConfigError, RollguardError

log = logging.getLogger(__name__)

# KEYS: leader, fence. ARGV: node, ttl in ms, token floor. Returns the new token, or
# nil if held. The floor lifts a counter that a Redis without persistence lost.
_ACQUIRE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if token <= floor then
  token = floor + 1
  redis.call('SET', KEYS[2], token)
end
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. token, 'NX', 'PX', ARGV[2])
return token
"""
# KEYS: leader. ARGV: our value, ttl in ms. 1 if extended, 0 if not ours (any more).
_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: leader. ARGV: our value. 1 if deleted, 0 if not ours.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

OnChange = Callable[[bool, int], None]


class LeaseError(RollguardError):
    """Redis did not answer in time, could not be reached, or refused a command."""


class Holder(NamedTuple):
    """Who holds the lease now, and in which term."""

    node: str
    token: int


class Lease:
    """One node's view of the leader lease.

    ``acquire``, ``renew``, ``release`` and ``holder`` are single steps that raise
    :class:`LeaseError` when Redis fails; :meth:`run` is the loop a daemon uses.
    """

    def __init__(
        self,
        redis_url: str,
        key_prefix: str,
        node: str,
        ttl: float = 10.0,
        *,
        margin: float | None = None,
        timeout: float | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.node = node
        self.ttl = ttl
        self.interval = ttl / 3
        # A fifth of the lease: with renewals every third, a leader survives one lost
        # renewal and still steps down well before anyone else could acquire.
        self.margin = ttl / 5 if margin is None else margin
        if not 0 <= self.margin < ttl - self.interval:
            raise ValueError("margin must leave room for at least one renewal")
        self.timeout = self.interval if timeout is None else timeout
        self.key = f"{key_prefix}:leader"
        self.fence_key = f"{key_prefix}:fence"
        self._ttl_ms = max(1, round(ttl * 1000))
        # No retries inside the client: a retry loop would outlast the lease, and the
        # run loop already tries again on its own schedule.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._token: int | None = None
        self._value: str | None = None
        self._valid_until = 0.0
        # The daemon sets this to the highest token its store has seen: a Redis that
        # restarted without persistence would otherwise count again from 1, and the
        # store would refuse every write of the new leader.
        self.min_token = 0

    @classmethod
    def from_config(cls, ha: HaConfig, node: str) -> Lease:
        if not ha.redis_url:
            raise ConfigError("ha.redis_url is not set")
        return cls(ha.redis_url, ha.key_prefix, node, ha.lease_ttl)

    @property
    def is_leader(self) -> bool:
        """True only while our last confirmed term is within its safe lifetime."""
        return self._token is not None and time.monotonic() < self._valid_until

    @property
    def token(self) -> int | None:
        """The fencing token to stamp on commands and writes; None when not leader."""
        return self._token if self.is_leader else None

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it. True if we hold it afterwards."""
        if self._value is not None:
            return await self.renew()
        sent = time.monotonic()
        token = await self._call(
            self._acquire(
                keys=[self.key, self.fence_key], args=[self.node, self._ttl_ms, self.min_token]
            ),
            self.timeout,
        )
        if token is None:
            return False
        self._token = int(token)
        self._value = f"{self.node}#{self._token}"
        self._valid_until = sent + self.ttl - self.margin
        return True

    async def renew(self) -> bool:
        """Extend our lease; False (and no longer leader) if it is not ours any more."""
        if self._value is None:
            return False
        sent = time.monotonic()
        # Never wait past our own deadline: by then we must have stepped down.
        remaining = self._valid_until - sent
        if remaining <= 0:
            self._clear()
            return False
        extended = await self._call(
            self._renew(keys=[self.key], args=[self._value, self._ttl_ms]),
            min(self.timeout, remaining),
        )
        if not extended:
            self._clear()
            return False
        self._valid_until = sent + self.ttl - self.margin
        return True

    async def release(self) -> bool:
        """Give the lease up if it is ours; True if a key was deleted."""
        value = self._value
        # Whatever Redis says, we stop acting as leader now.
        self._clear()
        if value is None:
            return False
        deleted = await self._call(self._release(keys=[self.key], args=[value]), self.timeout)
        return bool(deleted)

    async def holder(self) -> Holder | None:
        """The current holder according to Redis, or None if the lease is free."""
        raw = await self._call(self._redis.get(self.key), self.timeout)
        if raw is None:
            return None
        node, _, token = raw.decode(errors="replace").rpartition("#")
        if not node or not token.isdigit():
            raise LeaseError(f"{self.key} holds {raw!r}, not a rollguard lease")
        return Holder(node, int(token))

    async def close(self) -> None:
        await self._redis.aclose()

    async def run(self, stop: asyncio.Event, on_change: OnChange) -> None:
        """Hold or wait for the lease until ``stop`` is set.

        ``on_change(True, token)`` when we become leader, ``on_change(False, token)``
        when we stop, always before the lease could pass to another node. It is called
        from this loop, so it must not block: set a flag or schedule work. On ``stop``
        a leader releases the lease so a standby takes over at once; on cancellation it
        does not (as if the process died), and the lease simply expires.
        """
        leading: int | None = None
        unreachable = False
        try:
            while not stop.is_set():
                try:
                    if self._value is not None:
                        await self.renew()
                    else:
                        await self.acquire()
                except LeaseError as exc:
                    if not unreachable:
                        log.warning("lease %s: redis unavailable: %s", self.key, exc)
                    unreachable = True
                else:
                    if unreachable:
                        log.info("lease %s: redis reachable again", self.key)
                    unreachable = False
                leading = self._report(leading, on_change)
                await self._sleep(stop)
                # The deadline may have passed while we slept or waited on Redis.
                leading = self._report(leading, on_change)
            if leading is not None:
                # Tell the daemon first: once released, a standby may act at once.
                _call_back(on_change, False, leading)
                leading = None
            if self._value is not None:
                with contextlib.suppress(LeaseError):
                    await self.release()
        finally:
            if leading is not None:
                self._clear()
                _call_back(on_change, False, leading)

    def _report(self, leading: int | None, on_change: OnChange) -> int | None:
        token = self.token
        if leading is not None and token != leading:
            if self._value is not None and token is None:
                log.warning(
                    "lease %s: term %d expired unconfirmed, stepping down", self.key, leading
                )
                self._clear()
            _call_back(on_change, False, leading)
            leading = None
        if leading is None and token is not None:
            log.info("lease %s: %s leads with token %d", self.key, self.node, token)
            _call_back(on_change, True, token)
            leading = token
        return leading

    async def _sleep(self, stop: asyncio.Event) -> None:
        delay = self.interval
        if self._value is not None:
            # Wake for the deadline even when a renewal is not yet due.
            delay = max(0.0, min(delay, self._valid_until - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()

    def _clear(self) -> None:
        self._token = None
        self._value = None
        self._valid_until = 0.0

    async def _call(self, call: Awaitable[Any], within: float) -> Any:
        # The call runs in a task of its own behind a shield: redis-py can swallow a
        # cancellation that lands mid-command (redis/redis-py#2028, #2551), which would
        # leave a cancelled lease loop running. Our own wait is what gets cancelled.
        task = asyncio.ensure_future(call)
        try:
            async with asyncio.timeout(within):
                return await asyncio.shield(task)
        except TimeoutError as exc:
            raise LeaseError(f"redis did not answer within {within:.2f} s") from exc
        except (RedisError, OSError) as exc:
            raise LeaseError(f"redis: {exc}") from exc
        finally:
            if not task.done():
                # Abandoned: redis-py drops the connection it was using.
                task.cancel()
                task.add_done_callback(_ignore_result)


def _ignore_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _call_back(on_change: OnChange, leader: bool, token: int) -> None:
    try:
        on_change(leader, token)
    except Exception:
        # The lease must keep its schedule even if the daemon's hook is broken.
        log.exception("lease on_change(%s, %d) failed", leader, token)
