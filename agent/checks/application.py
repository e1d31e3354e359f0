"""The application: HTTP probes of a health URL, and optionally its Prometheus metrics.

Probes: ``requests`` GETs per run, concurrently, each under the inner timeout. An
error is a status outside 2xx/3xx or no response at all (refused, reset, timed out).
The sample carries the counts behind every rate (``requests``, ``errors``), the
latency quantiles and the raw latencies of every response, because the coordinator
weighs evidence by volume: one failed probe out of five is not a 20 % error rate.

Real traffic (``metrics_url``): two scrapes make an interval; the request counter's
deltas give ``traffic_requests`` and ``traffic_errors`` (5xx), and the latency
histogram's bucket deltas go out as the sample's ``histogram`` in milliseconds.

Blue-green (``slot_urls``): besides the main check (``url``, the endpoint serving
traffic, named ``application``), one check per slot probes that slot's own instance
and is named ``application_blue`` or ``application_green``. A slot's check measures
only while the agent knows its active slot (the deploy state, which a ``switch``
changes) and that slot is the other one: the inactive slot is where a blue-green deploy
puts the new version, and the coordinator judges it by these samples before it
switches. It has no real traffic, so it never scrapes. Same code, same counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

from agent import httpclient, promtext
from agent.checks.base import Check, Sink, describe, now, quantile
from shared.config.agent import ApplicationCheck as ApplicationConfig
from shared.messages import Histogram, Slot

PROBE_BODY_LIMIT = 64 * 1024
SCRAPE_BODY_LIMIT = 8 * 1024 * 1024


class ApplicationCheck(Check):
    """The main probe, or with ``slot`` that slot's probe (see the module docstring);
    ``active_slot`` tells which slot serves traffic now (None: not known)."""

    name = "application"

    def __init__(
        self,
        config: ApplicationConfig,
        *,
        slot: Slot | None = None,
        active_slot: Callable[[], Slot | None] | None = None,
    ) -> None:
        super().__init__(interval=config.interval, timeout=config.timeout)
        self.config = config
        self.slot = slot
        self._active_slot = active_slot
        if slot is None:
            url, metrics_url = config.url, config.metrics_url
        else:
            self.name = f"application_{slot}"
            url, metrics_url = config.slot_urls[slot], None
        self._probe_target = httpclient.target(url)
        self._scrape_target = httpclient.target(metrics_url) if metrics_url else None
        self._counter_names = (config.requests_metric, config.latency_metric + "_bucket")
        self._latency_scale = 1000.0 if config.latency_unit == "seconds" else 1.0
        self._last_scrape: (
            tuple[dict[promtext.Labels, float], dict[promtext.Labels, float]] | None
        ) = None

    def measuring(self) -> bool:
        """Whether a run measures: always for the main probe; for a slot's, while the
        other slot is known to serve traffic."""
        if self.slot is None:
            return True
        active = self._active_slot() if self._active_slot is not None else None
        return active is not None and active != self.slot

    async def collect(self, sink: Sink) -> None:
        if not self.measuring():
            return
        started = now()
        probes = self._probes()
        if self._scrape_target is not None:
            outcomes, traffic = await asyncio.gather(probes, self._scrape())
        else:
            outcomes, traffic = await probes, None
        latencies = sorted(latency for latency, _ in outcomes if latency is not None)
        failures = Counter(reason for _, reason in outcomes if reason is not None)
        requests = len(outcomes)
        errors = sum(failures.values())
        values: dict[str, float] = {
            "requests": requests,
            "errors": errors,
            "error_rate": errors / requests,
            "responses": len(latencies),
        }
        if latencies:
            values["latency_ms"] = sum(latencies) / len(latencies)
            values["p50_ms"] = quantile(latencies, 0.50)
            values["p95_ms"] = quantile(latencies, 0.95)
            values["p99_ms"] = quantile(latencies, 0.99)
        problems: list[str] = []
        if failures:
            problems.append(
                f"{errors} of {requests} probes failed: "
                + ", ".join(f"{reason} x{n}" if n > 1 else reason for reason, n in failures.items())
            )
        histogram: Histogram | None = None
        scrape_failed = False
        if isinstance(traffic, str):
            problems.append(f"metrics scrape: {traffic}")
            scrape_failed = True
        elif traffic is not None:
            traffic_values, histogram = traffic
            values.update(traffic_values)
        sink.emit(
            self.sample(
                started,
                values,
                error="; ".join(problems) if problems else None,
                # Reachable and measurable; individual failed probes travel as counts.
                ok=errors < requests and not scrape_failed,
                latencies_ms=latencies,
                histogram=histogram,
            )
        )

    async def _probes(self) -> list[tuple[float | None, str | None]]:
        return await asyncio.gather(*(self._probe() for _ in range(self.config.requests)))

    async def _probe(self) -> tuple[float | None, str | None]:
        """(latency of a response or None, failure reason or None)."""
        begin = time.perf_counter()
        try:
            async with asyncio.timeout(self.inner_timeout):
                response = await httpclient.get(self._probe_target, max_body=PROBE_BODY_LIMIT)
        except TimeoutError as exc:
            return None, describe(exc, self.inner_timeout)
        except (OSError, httpclient.HttpError) as exc:
            return None, describe(exc)
        # Rounded here, so the quantiles are values of the list that goes out.
        latency = round((time.perf_counter() - begin) * 1000.0, 3)
        if 200 <= response.status < 400:
            return latency, None
        return latency, f"HTTP {response.status}"

    async def _scrape(
        self,
    ) -> tuple[dict[str, float], Histogram | None] | str | None:
        """This interval's real-traffic values, a failure reason, or None on the first
        scrape (a baseline has no interval yet)."""
        assert self._scrape_target is not None
        try:
            async with asyncio.timeout(self.inner_timeout):
                response = await httpclient.get(self._scrape_target, max_body=SCRAPE_BODY_LIMIT)
        except TimeoutError as exc:
            return describe(exc, self.inner_timeout)
        except (OSError, httpclient.HttpError) as exc:
            return describe(exc)
        if response.status != 200:
            return f"HTTP {response.status}"
        requests_name = self._counter_names[0]
        counters: dict[promtext.Labels, float] = {}
        buckets: dict[promtext.Labels, float] = {}
        try:
            for series in promtext.parse(
                response.body.decode("utf-8", "replace"), self._counter_names
            ):
                (counters if series.name == requests_name else buckets)[series.labels] = (
                    series.value
                )
        except promtext.PromError as exc:
            return str(exc)
        if not counters:
            return f"no {requests_name} series in the scrape"
        previous, self._last_scrape = self._last_scrape, (counters, buckets)
        if previous is None:
            return None
        request_deltas = promtext.deltas(previous[0], counters)
        label = promtext.status_label(request_deltas, self.config.status_label)
        classes = promtext.by_status_class(request_deltas, label)
        total = sum(classes.values())
        values: dict[str, float] = {
            "traffic_requests": total,
            "traffic_errors": classes.get("5", 0.0),
            "traffic_client_errors": classes.get("4", 0.0),
        }
        if total:
            values["traffic_error_rate"] = values["traffic_errors"] / total
        histogram: Histogram | None = None
        if buckets:
            shaped = promtext.bucket_counts(
                promtext.deltas(previous[1], buckets), self._latency_scale
            )
            if shaped is not None:
                histogram = Histogram(bounds=shaped[0], counts=shaped[1])
        return values, histogram
