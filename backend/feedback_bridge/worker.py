"""The delivery worker: claims due outbox rows, maps them, sends them, records the outcome."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine

from . import db, delivery_reads, outbox
from .exceptions import CredentialsError, DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from .models import Delivery, DeliveryStatus
from .outbox import Outcome
from .providers import ProviderAdapter, Skip

logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 4
    lease_seconds: float = 120.0
    max_attempts: int = 10
    backoff_base: float = 2.0
    backoff_max: float = 3600.0
    poll_seconds: float = 2.0


def backoff_delay(attempts: int, settings: WorkerSettings, retry_after: float | None, rand: float) -> float:
    """Seconds to wait before the next attempt: the provider's ``Retry-After`` if it gave one, else
    exponential backoff with "equal jitter" (half fixed, half random) so retries of many rows spread out."""
    if retry_after is not None and retry_after >= 0:
        return min(float(retry_after), settings.backoff_max)
    ceiling = min(settings.backoff_max, settings.backoff_base * 2 ** max(attempts - 1, 0))
    return ceiling / 2 + rand * ceiling / 2


class Worker:
    """Delivers the outbox of one database to a set of adapters. Safe to run many at once."""

    def __init__(
        self, engine: Engine, adapters: Mapping[str, ProviderAdapter], settings: WorkerSettings,
        *, clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.adapters = dict(adapters)
        self.settings = settings
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()  # set by wake(), stop() and every send that finishes
        self._enqueued = threading.Event()  # set by wake() only
        self._more_due = False  # the last claim of run_forever took all it asked for
        self._stop = threading.Event()
        self._loop_done = threading.Event()  # clear while run_forever is inside its loop
        self._loop_done.set()
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="feedback-delivery")
        self._lock = threading.Lock()  # guards the three below, shared by the loop and the sending slots
        self._ready: deque[tuple[Delivery, delivery_reads.Prepared]] = deque()  # claimed, waiting for a slot
        self._outcomes: list[Outcome] = []  # finished sends not recorded yet
        self._busy = 0  # slots sending
        self._slots: set[Future[None]] = set()
        self._random = random.Random()

    # -- one pass ----------------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> int:
        """Claim and deliver what is due at ``now``; returns how many rows were processed."""
        if not self.adapters:
            return 0
        now = now or self.clock()
        claimed, prepared = self._claim(self.settings.concurrency, now)
        if claimed:
            self._record(list(self._pool.map(self._deliver, claimed, prepared)))
        return len(claimed)

    def _claim(self, limit: int, now: datetime) -> tuple[list[Delivery], list[delivery_reads.Prepared]]:
        return self._record_and_claim([], limit, now)

    def _record_and_claim(
        self, outcomes: list[Outcome], limit: int, now: datetime
    ) -> tuple[list[Delivery], list[delivery_reads.Prepared]]:
        """Record finished sends and claim up to ``limit`` due rows in one write transaction (each commit waits
        for the disk: ~4 ms on PostgreSQL here, twice a batch before), then read what mapping them needs, with
        one read for all of them. No more than free sending slots are claimed: a row claimed to wait behind slow
        sends would spend its lease waiting, and be sent again by another worker when that lease runs out."""
        try:
            with db.write(self.engine) as conn:
                lost = outbox.finish_many(conn, outcomes, now=self.clock()) if outcomes else []
                claimed = outbox.claim(
                    conn, owner=self.owner, providers=list(self.adapters), limit=limit, now=now,
                    lease_seconds=self.settings.lease_seconds,
                )
        except Exception:
            if outcomes:  # whatever failed in the claim, the sends are recorded
                self._record(outcomes)
            raise
        _warn_lost(lost)
        if not claimed:
            return [], []
        try:
            with db.read(self.engine) as conn:
                return claimed, delivery_reads.load_contexts(conn, claimed, now)
        except Exception as exc:  # as if each delivery had failed to read its own
            return claimed, [exc] * len(claimed)

    def _record(self, outcomes: list[Outcome]) -> None:
        """The outcomes of many sends, in one transaction."""
        with db.write(self.engine) as conn:
            _warn_lost(outbox.finish_many(conn, outcomes, now=self.clock()))

    def drain(self, now: datetime | None = None) -> int:
        """Run passes until nothing is due at ``now``."""
        total = 0
        while processed := self.run_once(now):
            total += processed
        return total

    def reclaim(self) -> int:
        with db.write(self.engine) as conn:
            n = outbox.reclaim_expired(conn, self.clock())
        if n:
            logger.warning("Reclaimed %d deliveries whose worker lease had expired", n)
        return n

    # -- one delivery ------------------------------------------------------------------------------

    def _deliver(self, delivery: Delivery, prepared: delivery_reads.Prepared) -> Outcome:
        adapter = self.adapters[delivery.provider]
        request = None
        try:
            if isinstance(prepared, Exception):
                raise prepared
            context, last_request = prepared
            request = adapter.build_request(context)
            if delivery.kind == "state" and request == last_request:
                raise Skip("Unchanged since the last delivery.")
            response = adapter.send(request)
        except Skip as skip:
            return delivery, DeliveryStatus.SKIPPED, {"request": request, "error": skip.reason}
        except RetryableDeliveryError as exc:
            return self._retry_or_fail(delivery, request, exc)
        except (PermanentDeliveryError, CredentialsError) as exc:
            logger.warning("Delivery %s to %s failed for good: %s", delivery.pk, delivery.provider, exc)
            return delivery, DeliveryStatus.FAILED, {"request": request, "response": exc.response,
                                                     "error": f"{type(exc).__name__}: {exc}"}
        except DeliveryError as exc:
            return self._retry_or_fail(delivery, request, RetryableDeliveryError(str(exc), response=exc.response))
        except Exception as exc:  # a bug in an adapter must not kill the worker or lose the row
            logger.exception("Delivery %s to %s raised unexpectedly", delivery.pk, delivery.provider)
            return self._retry_or_fail(delivery, request, RetryableDeliveryError(f"{type(exc).__name__}: {exc}"))
        return delivery, DeliveryStatus.DELIVERED, {"request": request, "response": response}

    def _retry_or_fail(self, delivery: Delivery, request: dict | None, exc: RetryableDeliveryError) -> Outcome:
        error = f"{type(exc).__name__}: {exc}"
        if delivery.attempts >= self.settings.max_attempts:
            logger.warning("Delivery %s to %s gave up after %d attempts: %s",
                           delivery.pk, delivery.provider, delivery.attempts, exc)
            return delivery, DeliveryStatus.FAILED, {"request": request, "response": exc.response,
                                                     "error": f"Gave up after {delivery.attempts} attempts. {error}"}
        delay = backoff_delay(delivery.attempts, self.settings, exc.retry_after, self._random.random())
        return delivery, DeliveryStatus.PENDING, {"request": request, "response": exc.response, "error": error,
                                                  "next_attempt_at": self.clock() + timedelta(seconds=delay)}

    # -- running -----------------------------------------------------------------------------------

    def wake(self) -> None:
        """Tell an idle worker that new deliveries were enqueued."""
        self._enqueued.set()
        self._wake.set()

    def run_forever(self) -> None:
        """Keep ``concurrency`` sends going. A slot that finishes a send starts the next claimed row at once
        (``_slot``); this loop records finished sends and claims more, a batch at a time (a quarter of the
        slots), so the database round trips of a claim are not between one send and the next."""
        self._loop_done.clear()
        try:
            self.reclaim()
            polled = True
            while not self._stop.is_set():
                self._wake.clear()  # before the step: a wake() or a send finishing during it ends the wait below
                try:
                    seconds = self._step(polled)
                except Exception:  # the database may be briefly unreachable; keep going
                    logger.exception("Delivery pass failed; retrying in %.1fs", self.settings.poll_seconds)
                    seconds = self._idle_seconds()
                polled = not self._wake.wait(seconds)
        finally:
            try:  # the sends in progress are recorded and the rows not started given back, not left leased
                with self._lock:
                    slots = set(self._slots)
                wait(slots)
                self._finish_up()
            finally:
                self._loop_done.set()

    def _step(self, polled: bool) -> float:
        """Record finished sends and claim rows for the free slots and the ready queue; returns how long to
        wait (a finishing send ends it early). With slots busy, it claims only for a batch, and only when more
        may be due: the last claim was full, sends were just recorded (rows waiting for them may follow), rows
        were enqueued, or the wait timed out (rows may have come due)."""
        enqueued = self._enqueued.is_set()
        self._enqueued.clear()
        with self._lock:
            busy, ready, finished = self._busy, len(self._ready), len(self._outcomes)
        wanted = self.settings.concurrency + self._prefetch - busy - ready
        if busy and not (wanted >= self._batch and (finished or self._more_due or enqueued or polled)):
            if finished >= self._batch or (polled and finished):
                self._record(self._take_outcomes())
            return self.settings.poll_seconds
        claimed, prepared = self._record_and_claim(self._take_outcomes(), wanted, self.clock())
        self._more_due = len(claimed) == wanted
        self._dispatch(list(zip(claimed, prepared, strict=True)))
        return self.settings.poll_seconds if busy or claimed else self._idle_seconds()

    def _dispatch(self, rows: list[tuple[Delivery, delivery_reads.Prepared]]) -> None:
        """Start claimed rows in free slots; the rest wait in the ready queue for a slot to finish."""
        with self._lock:
            self._ready.extend(rows)
            starting = [self._ready.popleft() for _ in range(min(len(self._ready),
                                                                 self.settings.concurrency - self._busy))]
            self._busy += len(starting)
        for delivery, prepared in starting:
            future = self._pool.submit(self._slot, delivery, prepared)
            with self._lock:
                self._slots.add(future)
            future.add_done_callback(self._slot_ended)

    def _slot(self, delivery: Delivery, prepared: delivery_reads.Prepared) -> None:
        """One sending slot: deliver, then the next ready row, until none is left (or the worker stops)."""
        row: tuple[Delivery, delivery_reads.Prepared] | None = (delivery, prepared)
        while row is not None:
            outcome = self._deliver(*row)
            with self._lock:
                self._outcomes.append(outcome)
                row = self._ready.popleft() if self._ready and not self._stop.is_set() else None
                if row is None:
                    self._busy -= 1
            self._wake.set()

    def _slot_ended(self, future: Future[None]) -> None:
        with self._lock:
            self._slots.discard(future)

    def _take_outcomes(self) -> list[Outcome]:
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        return outcomes

    def _finish_up(self) -> None:
        """On stopping: record the last sends, and give back the claimed rows no slot started."""
        with self._lock:
            unsent = [delivery for delivery, _ in self._ready]
            self._ready.clear()
        try:
            if outcomes := self._take_outcomes():
                self._record(outcomes)
        finally:
            if unsent:
                with db.write(self.engine) as conn:
                    outbox.release(conn, unsent, now=self.clock())

    @property
    def _batch(self) -> int:
        """How many finished sends are recorded, and rows claimed, at once: a quarter of the slots."""
        return max(1, self.settings.concurrency // 4)

    @property
    def _prefetch(self) -> int:
        """Claimed rows kept ready beyond the free slots: two batches, so the slots finishing while the next
        claim is on its way to the database still find one. They wait about half a send, far below a lease."""
        return 2 * self._batch

    def _idle_seconds(self) -> float:
        try:
            with db.read(self.engine) as conn:
                due = outbox.next_due(conn, list(self.adapters))
        except Exception:
            return self.settings.poll_seconds
        if due is None:
            return self.settings.poll_seconds
        return max(0.01, min(self.settings.poll_seconds, (due - self.clock()).total_seconds()))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="feedback-worker", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Finish the sends in progress (their rows are recorded, not left leased), then stop."""
        self._stop.set()
        self._wake.set()
        self._loop_done.wait(self.settings.lease_seconds)
        self._pool.shutdown(wait=True)


def _warn_lost(lost: list[Delivery]) -> None:
    for delivery in lost:
        logger.warning("Lost the lease on delivery %s to %s before finishing it", delivery.pk, delivery.provider)
