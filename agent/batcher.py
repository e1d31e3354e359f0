"""The runner's sink: samples become one metric batch per tick in the durable buffer.

A tick opens with the first sample after a quiet spell and closes ``linger`` seconds
later, so checks that finish together travel together and no sample waits longer
than that. Each sealed batch gets the next sequence number and goes into the store at
once: from then on it survives a broker outage and an agent restart, and leaves the
store only when the broker has acknowledged it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import Final

import msgspec

from agent.store import Store
from shared.messages import MAX_PAYLOAD, MetricBatch, Sample, encode

log = logging.getLogger(__name__)
# Room for the batch envelope below the broker's and the coordinator's 64 KiB limit.
BATCH_BYTES: Final = MAX_PAYLOAD - 4096

_sample_encoder: Final = msgspec.json.Encoder()
_sample_decoder: Final = msgspec.json.Decoder(Sample)


class Batcher:
    def __init__(
        self,
        *,
        host: str,
        store: Store,
        max_batches: int,
        linger: float,
        session: Callable[[], int],
        on_sealed: Callable[[], None],
    ) -> None:
        self.host = host
        self.store = store
        self.max_batches = max_batches
        self.linger = linger
        self._session = session
        self._on_sealed = on_sealed
        self._samples: list[Sample] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def emit(self, sample: Sample) -> None:
        encoded = _sample_encoder.encode(sample)
        try:
            # Struct construction does not enforce the wire's constraints; decoding
            # does. A sample the coordinator would refuse must not poison a batch.
            _sample_decoder.decode(encoded)
        except msgspec.ValidationError as exc:
            log.error(
                "check %s produced an invalid sample (%s); sending its failure instead",
                sample.check,
                exc,
            )
            sample = Sample(
                check=sample.check,
                time=sample.time,
                ok=False,
                error=f"invalid sample: {exc}"[:1024],
            )
            encoded = _sample_encoder.encode(sample)
        if self._samples and self._size + len(encoded) > BATCH_BYTES:
            self.seal()
        self._samples.append(sample)
        self._size += len(encoded) + 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self.seal)

    def seal(self) -> None:
        """Close the current tick: its samples become the next batch in the buffer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._samples:
            return
        samples, self._samples, self._size = self._samples, [], 0
        session = self._session()
        try:
            seq, dropped = self.store.append_batch(
                lambda seq: encode(
                    MetricBatch(host=self.host, session=session, seq=seq, samples=samples)
                ),
                self.max_batches,
            )
        except sqlite3.Error as exc:
            # A full or broken disk must not stop collection; the samples are lost and
            # said so, the agent keeps running and retries with the next tick.
            log.error("cannot store a batch of %d samples: %s", len(samples), exc)
            return
        if dropped:
            log.warning(
                "buffer full (%d batches): dropped the %d oldest; %d dropped in total",
                self.max_batches,
                dropped,
                self.store.dropped,
            )
        log.debug("sealed batch %d with %d samples", seq, len(samples))
        self._on_sealed()
