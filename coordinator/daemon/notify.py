"""Notifications: "notify stakeholders" from the guide, as webhooks per environment.

The daemon calls :meth:`Notifier.notify` from the decision path, so delivery must never
block it: ``notify()`` only enqueues. Each webhook target has its own bounded queue and
its own worker, so a slow or dead receiver neither delays the others nor reorders its
own messages (a "rolled back" never overtakes its "deployment started").

Exactly-once is impossible over HTTP, so the aim is "at most once per state change per
notifier, and dedupable after that": every notification carries an idempotency key,
repeated keys are dropped in-process (a daemon resuming after a crash may replay its
last actions), and the key travels as the ``Idempotency-Key`` header so that receivers
can dedupe across coordinator restarts.

Every alert that fires is also logged at warning with its evidence, webhooks or not, so
the journal shows it; the deliveries of each alert's notifications are remembered
(:class:`AlertDeliveries`) for ``GET /api/v1/alerts`` to say who was told. With
``http.public_url`` set, a notification about a deployment links to its page.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec

from shared.config.coordinator import Environments, Webhook
from shared.errors import RollguardError
from shared.kinds import NotifyKind
from shared.views import DeliveryView

log = logging.getLogger(__name__)

Outcome = Literal["sent", "retried", "failed", "dropped", "duplicate"]

ENVIRONMENT_NAMES: Final = ("development", "staging", "production")
USER_AGENT: Final = "rollguard-notifier/1"
# Slack refuses a section with more than 10 fields, field texts over 2000 characters and
# section texts over 3000.
SLACK_FIELDS_PER_SECTION: Final = 10
SLACK_FIELD_MAX: Final = 1900
SLACK_SECTION_MAX: Final = 2900
RETRYABLE_STATUS: Final = frozenset({408, 429})


class NotifyError(RollguardError):
    """A webhook delivery failed; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """One state change worth telling people about."""

    kind: NotifyKind
    environment: str
    deployment: str | None = None
    host: str | None = None
    version: str | None = None
    # One line for humans: "error rate 3.2% > 1% (Wilson lower bound 2.1%)".
    message: str = ""
    # The numbers behind the decision (rule, window, counts, bounds).
    evidence: dict[str, Any] = {}
    time: float
    # What makes this change unique within its deployment and kind: the step for
    # step_promoted, the alert key (and its firing) for alerts, the store's event id
    # for changes that can repeat (paused, resumed). Empty when the kind happens once.
    key: str = ""
    # The deployment's page on the dashboard (http.public_url), when there is one.
    link: str | None = None

    @property
    def idempotency_key(self) -> str:
        """Stable across processes, bounded, and safe in an HTTP header."""
        parts = [self.environment, self.deployment or "", self.kind, self.key]
        if self.deployment is None and not self.key:
            # No identity of its own (an alert without a key): dedupe by content instead.
            parts += [self.host or "", self.message, repr(self.time)]
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
        return f"rollguard-{digest[:40]}"


@dataclass
class RetryPolicy:
    """Per delivery: ``attempts`` tries, exponential backoff from ``base`` capped at
    ``cap`` with jitter; a receiver's Retry-After is honoured up to ``retry_after_cap``."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        ceiling = min(self.cap, self.base * 2.0 ** (attempt - 1))
        # Half fixed, half random: spreads a fleet of retries without ever retrying at once.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311


@dataclass
class NotifierStats:
    """Counters for /metrics; each counts deliveries (one notification x one target),
    except ``duplicates`` and ``queued`` which count notify() calls."""

    queued: int = 0
    duplicates: int = 0
    unrouted: int = 0
    sent: int = 0
    retries: int = 0
    failed: int = 0
    dropped: int = 0


OnOutcome = Callable[[Outcome, Notification, Webhook | None], None]
Linker = Callable[[str], str | None]
ALERT_KINDS: Final = frozenset({NotifyKind.ALERT_FIRED, NotifyKind.ALERT_RESOLVED})
# The alerts whose deliveries are remembered (the oldest are forgotten first).
REMEMBERED_ALERTS: Final = 1000


def alert_key(notification: Notification) -> str:
    """The store's key of the alert a notification is about (rule and host)."""
    return f"{notification.evidence.get('rule', '')}:{notification.host or ''}"


class AlertDeliveries:
    """Who was told of each alert: the deliveries of its fired and resolved
    notifications, by the alert's key and the time it fired. Kept in memory for the
    last ``limit`` firings: a restarted coordinator knows only its own."""

    def __init__(self, limit: int = REMEMBERED_ALERTS) -> None:
        self._limit = limit
        # key -> (fired at, deliveries)
        self._by_key: OrderedDict[str, tuple[float, list[DeliveryView]]] = OrderedDict()

    def record(self, outcome: Outcome, notification: Notification, webhook: Webhook) -> None:
        if notification.kind not in ALERT_KINDS or outcome not in ("sent", "failed", "dropped"):
            return
        key = alert_key(notification)
        if notification.kind == NotifyKind.ALERT_FIRED:
            fired = notification.time
        else:
            fired_at = notification.evidence.get("fired_at")
            fired = float(fired_at) if isinstance(fired_at, int | float) else notification.time
        entry = self._by_key.get(key)
        if entry is None or (notification.kind == NotifyKind.ALERT_FIRED and entry[0] != fired):
            entry = (fired, [])
            self._by_key[key] = entry
        self._by_key.move_to_end(key)
        entry[1].append(
            DeliveryView(
                target=_redact(webhook.url),
                kind=str(notification.kind),
                outcome=outcome,
                time=time.time(),
            )
        )
        while len(self._by_key) > self._limit:
            self._by_key.popitem(last=False)

    def told(self, key: str, started: float) -> list[DeliveryView]:
        """The deliveries for the firing of alert ``key`` that started at ``started``."""
        entry = self._by_key.get(key)
        if entry is None or abs(entry[0] - started) > 1e-3:
            return []
        return list(entry[1])


def targets_from_config(environments: Environments) -> dict[str, list[Webhook]]:
    """The webhook targets of each environment in the coordinator config."""
    return {name: list(environments.get(name).webhooks) for name in ENVIRONMENT_NAMES}


class Notifier:
    """Delivers notifications to the webhooks of their environment, in the background.

    ``async with Notifier(...)`` or ``start()`` ... ``close()``. ``notify()`` may be
    called before ``start()``; deliveries begin once started.
    """

    def __init__(
        self,
        targets: Mapping[str, Sequence[Webhook]],
        *,
        queue_size: int = 1000,
        retry: RetryPolicy | None = None,
        remember: int = 10_000,
        on_outcome: OnOutcome | None = None,
        link: Linker | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.stats = NotifierStats()
        self.alerts = AlertDeliveries()
        self._on_outcome = on_outcome
        self._link = link
        self._remember = remember
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None
        self._targets: dict[str, list[_Target]] = {
            env: [_Target(hook, queue_size) for hook in hooks] for env, hooks in targets.items()
        }
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False

    async def __aenter__(self) -> Notifier:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start one delivery worker per target (inside a running event loop)."""
        if self._workers or self._closed:
            return
        for targets in self._targets.values():
            for target in targets:
                name = f"notify:{_redact(target.webhook.url)}"
                self._workers.append(asyncio.create_task(self._drain(target), name=name))

    def notify(self, notification: Notification) -> bool:
        """Queue ``notification`` for every target of its environment; never blocks.

        False when nothing was queued: a repeat of a key already seen, no target for
        the environment, or the notifier is closed.
        """
        if notification.kind == NotifyKind.ALERT_FIRED:
            # The journal shows every alert, whether or not anyone configured a webhook.
            log.warning(
                "alert fired: %s %s: %s %s",
                notification.environment or "-",
                notification.host or "-",
                notification.message,
                json.dumps(notification.evidence, sort_keys=True, default=str),
            )
        if notification.link is None and notification.deployment and self._link is not None:
            notification = msgspec.structs.replace(
                notification, link=self._link(notification.deployment)
            )
        key = notification.idempotency_key
        if self._closed:
            log.warning("notifier closed, not sending %s", notification.kind)
            return False
        if key in self._seen:
            self.stats.duplicates += 1
            self._emit("duplicate", notification, None)
            return False
        targets = self._targets.get(notification.environment, [])
        if not targets:
            self.stats.unrouted += 1
            return False
        self._seen[key] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        self.stats.queued += 1
        for target in targets:
            dropped = target.put(notification)
            if dropped is not None:
                self._count_drop(dropped, target.webhook, "queue full, dropped oldest")
        return True

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Deliver what is queued for up to ``drain_timeout`` seconds, then stop."""
        if self._closed:
            return
        self._closed = True
        if self._workers:
            pending = [t.queue.join() for ts in self._targets.values() for t in ts]
            try:
                async with asyncio.timeout(drain_timeout):
                    await asyncio.gather(*pending)
            except TimeoutError:
                log.warning("notifier: drain timed out after %.1f s", drain_timeout)
            for worker in self._workers:
                worker.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers.clear()
        for targets in self._targets.values():
            for target in targets:
                for notification in target.abandon():
                    self._count_drop(notification, target.webhook, "abandoned at close")
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _drain(self, target: _Target) -> None:
        while True:
            notification = await target.queue.get()
            try:
                await self._deliver(notification, target.webhook)
            except asyncio.CancelledError:
                self._count_drop(notification, target.webhook, "abandoned at close")
                raise
            except Exception:
                # A notification that cannot even be rendered (evidence that is not
                # JSON) is one failure; the worker must live on for the next one.
                self.stats.failed += 1
                self._emit("failed", notification, target.webhook)
                log.exception("notify %s: cannot deliver", notification.kind)
            finally:
                target.queue.task_done()

    async def _deliver(self, notification: Notification, webhook: Webhook) -> None:
        body, content_type = render(notification, webhook.format)
        headers = {
            "Content-Type": content_type,
            "Idempotency-Key": notification.idempotency_key,
            "User-Agent": USER_AGENT,
        }
        where = _redact(webhook.url)
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._post(webhook, body, headers)
            except NotifyError as exc:
                error = exc
            else:
                self.stats.sent += 1
                self._emit("sent", notification, webhook)
                return
            if not error.retryable or attempt >= self.retry.attempts:
                break
            delay = self.retry.delay(attempt, error.retry_after)
            self.stats.retries += 1
            self._emit("retried", notification, webhook)
            log.info("notify %s to %s: %s; retry in %.2f s", notification.kind, where, error, delay)
            await asyncio.sleep(delay)
        self.stats.failed += 1
        self._emit("failed", notification, webhook)
        log.error(
            "notify %s %s to %s: giving up after %d attempt(s): %s",
            notification.environment,
            notification.kind,
            where,
            attempt,
            error,
        )

    async def _post(self, webhook: Webhook, body: bytes, headers: dict[str, str]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=webhook.timeout)
        try:
            async with self._session.post(
                webhook.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                await response.read()
        except TimeoutError as exc:
            raise NotifyError(f"no answer within {webhook.timeout:g} s", retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise NotifyError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        if 200 <= status < 300:
            return
        retryable = status >= 500 or status in RETRYABLE_STATUS
        raise NotifyError(
            f"HTTP {status}",
            retryable=retryable,
            retry_after=retry_after if status in (429, 503) else None,
        )

    def _count_drop(self, notification: Notification, webhook: Webhook, why: str) -> None:
        self.stats.dropped += 1
        self._emit("dropped", notification, webhook)
        log.warning(
            "notify %s %s to %s: %s",
            notification.environment,
            notification.kind,
            _redact(webhook.url),
            why,
        )

    def _emit(self, outcome: Outcome, notification: Notification, webhook: Webhook | None) -> None:
        if webhook is not None:
            self.alerts.record(outcome, notification, webhook)
        if self._on_outcome is None:
            return
        try:
            self._on_outcome(outcome, notification, webhook)
        except Exception:
            # A broken metrics hook must not stop notifications.
            log.exception("notifier on_outcome callback failed")


class _Target:
    """One webhook's queue; on overflow the oldest waiting message gives way."""

    def __init__(self, webhook: Webhook, size: int) -> None:
        self.webhook = webhook
        self.queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize=size)

    def put(self, notification: Notification) -> Notification | None:
        dropped = None
        if self.queue.full():
            dropped = self.queue.get_nowait()
            self.queue.task_done()
        self.queue.put_nowait(notification)
        return dropped

    def abandon(self) -> list[Notification]:
        left = []
        while not self.queue.empty():
            left.append(self.queue.get_nowait())
            self.queue.task_done()
        return left


def render(notification: Notification, fmt: Literal["slack", "json"]) -> tuple[bytes, str]:
    """The request body and its content type for a target's format."""
    if fmt == "slack":
        return json.dumps(slack_payload(notification)).encode(), "application/json"
    return msgspec.json.encode(notification), "application/json"


_HEADLINES: Final[dict[NotifyKind, tuple[str, str]]] = {
    NotifyKind.DEPLOYMENT_STARTED: (":rocket:", "deployment started"),
    NotifyKind.STEP_PROMOTED: (":arrow_up:", "promoted"),
    NotifyKind.PAUSED: (":double_vertical_bar:", "paused"),
    # An automatic hold (fleet-wide incident, missing data, inconclusive): it waits for
    # a person, which an on-call engineer must not mistake for someone's pause.
    NotifyKind.HELD: (":hourglass:", "held for an operator"),
    NotifyKind.RESUMED: (":arrow_forward:", "resumed"),
    NotifyKind.APPROVAL_NEEDED: (":raising_hand:", "needs approval"),
    NotifyKind.ROLLED_BACK: (":rotating_light:", "rolled back"),
    NotifyKind.COMPLETED: (":white_check_mark:", "completed"),
    NotifyKind.FAILED: (":x:", "failed"),
    NotifyKind.REFUSED: (":no_entry:", "refused before it started"),
    NotifyKind.ALERT_FIRED: (":warning:", "alert fired"),
    NotifyKind.ALERT_RESOLVED: (":large_green_circle:", "alert resolved"),
}


def headline(n: Notification) -> str:
    """``:rotating_light: production: 2.4.1 rolled back — error rate 3.2% > 1% (...)``"""
    emoji, phrase = _HEADLINES[n.kind]
    subject = " ".join(part for part in (n.host, n.version) if part)
    if not subject and n.deployment:
        subject = f"deployment {n.deployment}"
    text = f"{emoji} {n.environment}: {subject + ' ' if subject else ''}{phrase}"
    return f"{text} — {n.message}" if n.message else text


def slack_payload(n: Notification) -> dict[str, Any]:
    """Slack's incoming-webhook shape: ``text`` for notifications and clients without
    blocks, ``blocks`` with the headline, the evidence as fields, and the identifiers."""
    text = _escape(headline(n))
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:SLACK_SECTION_MAX]}}
    ]
    fields = [
        {"type": "mrkdwn", "text": f"*{_escape(str(k))}*\n{_escape(_show(v))}"[:SLACK_FIELD_MAX]}
        for k, v in n.evidence.items()
    ]
    for i in range(0, len(fields), SLACK_FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": fields[i : i + SLACK_FIELDS_PER_SECTION]})
    context = [
        f"{label} `{_escape(value)}`"
        for label, value in (("deployment", n.deployment), ("host", n.host), ("version", n.version))
        if value
    ]
    context.append(datetime.fromtimestamp(n.time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    if n.link:
        context.append(f"<{n.link}|open the deployment>")
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
    )
    return {"text": text, "blocks": blocks}


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def _escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _redact(url: str) -> str:
    # Webhook URLs carry their secret in the path (Slack's /services/T../B../xyz):
    # logs and task names show only where they point.
    parts = urlsplit(url)
    if not parts.hostname:
        return "<webhook>"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/…"
