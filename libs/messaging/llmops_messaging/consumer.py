"""From a Kafka message to a handler's effect: decode, de-duplicate, handle, or dead-letter.

The orchestration (``EventConsumer.process``) knows nothing of FastStream, so it is tested
without a broker; ``subscribe`` attaches it to a FastStream broker as a subscriber whose
offsets are committed only after ``process`` returns, i.e. after the effect is durable.

Retries. A handler that fails (anything but ``Rejected``) has its message retried under the
``RetryPolicy``: the consumer waits the policy's backoff *while it holds the batch*, then raises,
so FastStream rewinds each partition of the batch to its first message (NACK) and Kafka delivers
it again — the events before the failing one are skipped as duplicates, the ones after it wait:
the partition's order is kept. Why not retry inside one delivery: a batch may hold several
failing messages, and their budgets one after the other could outlast ``max.poll.interval.ms``
(aiokafka: 300 s), after which the group rebalances and the commit fails. Each delivery waits at
most one backoff (``max_delay_s`` ≤ 120 s), so it stays far below that; the attempts and the
time of the first failure of a message are remembered by its position across redeliveries.

Attempts are counted in the service's SQLite database (``ProcessedEvents``), *before* the handler
runs: a message whose handler kills the process (out of memory, a segfault, ``kill -9``) has used
an attempt all the same, and once a message has used them all it is dead-lettered as
``attempts_exhausted`` without running the handler again, so it cannot crash the service forever
and block its partition. An attempt is bounded in time as well (``RetryPolicy.handler_timeout_s``):
a handler that hangs is cancelled and its attempt fails like any other.

A full disk (``OSError`` ``ENOSPC``, SQLite's "database or disk is full") or an unreachable shared
state store, from a handler or from the consumer's own state writes, is not the message's fault:
the attempt is not counted, nothing is dead-lettered, the consumer reports itself stalled with the
reason (``disk_full``, ``state_store_unavailable``) and, after a backoff, has the same batch
delivered again, until it goes through (``llmops_messaging.faults``).
The chaos tests can kill the process between a handler's effect and the offset commit through a
fault-injection point (``LLMOPS_FAULT_INJECT``, same module; a no-op unless set).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from llmops_events import DeadLetterReason, DecodeError, Envelope, EventData, KafkaRecord, decode
from llmops_messaging.dlq import DeadLetterQueue, Origin
from llmops_messaging.faults import FAULT_MEANINGS, FaultInjection, infrastructure_fault
from llmops_messaging.health import ConsumerHealth, ConsumerProgress, watch
from llmops_messaging.idempotency import AttemptKey, ProcessedEvents, RunRange
from llmops_messaging.retry import RetryPolicy
from llmops_messaging.tracing import batch_consumer_span, consumer_span, traceparent_of

logger = logging.getLogger(__name__)

Handler = Callable[[Envelope[Any]], Awaitable[None]]
T = TypeVar("T")

_ENV_FAULTS: Any = object()
"""``EventConsumer(faults=...)``'s default: read ``LLMOPS_FAULT_INJECT`` (None disables)."""

AIOKAFKA_MAX_POLL_INTERVAL_S = 300.0
"""aiokafka's default ``max_poll_interval_ms``: a member that does not poll for this long leaves its group."""
DELIVERY_MARGIN_S = 30.0
"""Of a delivery's time, beyond its handlers and one backoff: decoding, the DLQ, the state database."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decoded event of a batch and where it was read from."""

    envelope: Envelope[Any]
    origin: Origin


BatchHandler = Callable[[Sequence[Delivery]], Awaitable[Sequence["Rejected | None"]]]
"""Applies a run of events of one type at once; returns, per delivery and in order, None (applied)
or the ``Rejected`` verdict for that one event. Raising fails the whole run (see ``process_batch``)."""

_CURRENT_ORIGIN: ContextVar[Origin | None] = ContextVar("llmops_current_origin", default=None)
_CURRENT_EVENT: ContextVar[tuple[str, weakref.ref[asyncio.Task[Any]]] | None] = ContextVar(
    "llmops_current_event", default=None
)


def current_origin() -> Origin:
    """Where the message a handler is working on was read from (topic, partition, offset, group).

    Handlers take only the envelope; the few that need the position (dataset lineage) ask here.
    """
    origin = _CURRENT_ORIGIN.get()
    if origin is None:
        raise RuntimeError("no message is being processed in this context")
    return origin


def current_event_id() -> str | None:
    """The id of the event whose (per-event) handler is running in this task, or None: outside a
    handler, and in a task or thread the handler started (it may outlive the handler and answers no
    one event). What a handler publishes in answer derives its id from this one
    (``llmops_events.derived_id``), so a handler run again publishes the same ids."""
    current = _CURRENT_EVENT.get()
    if current is None:
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop in this thread
        return None
    return current[0] if task is not None and task is current[1]() else None


class Rejected(Exception):
    """A handler's verdict that this event can never be applied: it goes to the DLQ, not back."""

    def __init__(self, reason: str, detail: str, *, stage: str = "handle") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.stage = stage


class HandlerTimeout(TimeoutError):
    """A handler did not finish within the consumer's time limit: the attempt failed."""


class Outcome(StrEnum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"  # applied before, or sent to the DLQ before: a redelivery
    IGNORED = "ignored"
    DEAD_LETTERED = "dead_lettered"


class EventConsumer:
    """Applies each event once through the handler registered for its type.

    * a message that cannot be decoded goes to the DLQ with the decoder's reason, or as
      ``undecodable`` when decoding raised anything else: one bad message never holds up the
      others, and it is never dead-lettered twice (positions sent to the DLQ are remembered in
      the processed-events store, and skipped when a batch is redelivered);
    * event types this consumer has no handler for are skipped (topics carry several types);
    * an event id already applied is skipped, so redelivery has no second effect;
    * ``Rejected`` from a handler goes to the DLQ at once; any other error, and a handler still
      running after ``handler_timeout_s``, is retried with backoff and jitter by redelivery under
      ``retry`` (a ``RetryPolicy``) and then dead-lettered as ``handler_failed``, never retried
      forever;
    * each attempt is counted in ``processed`` before the handler runs, so a message whose handler
      kills the process is dead-lettered as ``attempts_exhausted`` once its attempts are used up;
    * a full disk, in the handler or in ``processed``, is neither an attempt nor a reason to
      dead-letter: the delivery fails, the consumer is stalled (``disk_full``) and the batch comes
      again after a backoff, as often as it takes.

    Event types with a *batch handler* are applied a run at a time by ``process_batch`` (one
    call, so the handler can write one transaction for hundreds of events); the others go
    through their per-event handler, in the order of the batch.

    ``deliver`` processes one delivery of the broker and tracks ``progress``: deliveries that keep
    failing outside the retry policy make ``health()`` unhealthy (see ``llmops_messaging.health``).
    """

    def __init__(
        self,
        *,
        group_id: str,
        handlers: Mapping[type[EventData], Handler],
        dlq: DeadLetterQueue,
        processed: ProcessedEvents,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        batch_handlers: Mapping[type[EventData], BatchHandler] | None = None,
        stall_after_failures: int = 3,
        handler_timeout_s: float | None = None,
        clock: Callable[[], float] = time.time,
        faults: FaultInjection | None = _ENV_FAULTS,
    ) -> None:
        """``retry`` defaults to ``RetryPolicy()`` (``LLMOPS_RETRY_*``); ``max_attempts``, when
        given, overrides its number of attempts. ``handler_timeout_s``: this consumer's limit on one
        attempt, instead of the policy's (a service with long jobs); ``clock``: wall-clock seconds
        (the time of a first failure outlives the process). ``faults``: a fault to inject (tests);
        by default ``LLMOPS_FAULT_INJECT`` is read, once, here."""
        self.group_id = group_id
        self._handlers = {model.event_type: handler for model, handler in handlers.items()}
        self._batch_handlers = {model.event_type: handler for model, handler in (batch_handlers or {}).items()}
        self._dlq = dlq
        self._processed = processed
        policy = retry if retry is not None else RetryPolicy()
        if max_attempts is not None:
            policy = policy.model_copy(update={"max_attempts": max_attempts})
        self.retry = policy
        if handler_timeout_s is not None and handler_timeout_s <= 0:
            raise ValueError("handler_timeout_s must be positive")
        self._timeout_given = handler_timeout_s is not None
        self.handler_timeout_s = handler_timeout_s if handler_timeout_s is not None else policy.handler_timeout_s
        self._clock = clock
        self.progress = ConsumerProgress(group_id, stall_after_failures=stall_after_failures)
        self._retry_raised: BaseException | None = None
        self._faults = FaultInjection.from_env() if faults is _ENV_FAULTS else faults
        # State writes the full disk refused, kept here until they go through (or stop mattering):
        # attempts that must not count, DLQ positions not yet marked, run markers not yet cleared.
        self._uncounted: dict[AttemptKey, int] = {}
        self._unmarked_dead_letters: dict[tuple[str, int, int], tuple[str, str]] = {}
        self._stale_runs: list[RunRange] = []

    @property
    def handles_batches(self) -> bool:
        return bool(self._batch_handlers)

    def health(self) -> ConsumerHealth:
        return self.progress.health()

    def fit_poll_interval(self, options: MutableMapping[str, Any]) -> None:
        """Make the handler time limit and the subscriber's ``max_poll_interval_ms`` agree (``subscribe``
        calls it). A delivery holds the poll loop for its handler, one backoff and a margin, and a
        member that does not poll within the interval is evicted from its group, so:

        * a subscriber that does not set the interval gets one that fits the time limit;
        * one that raises it, because its deliveries may take long (fine-tuning's jobs), gives its
          handlers the time that allows unless this consumer was given its own limit.
        """
        slack_s = self.retry.max_delay_s + DELIVERY_MARGIN_S
        poll_ms = options.get("max_poll_interval_ms")
        if poll_ms is None:
            longest_s = max(AIOKAFKA_MAX_POLL_INTERVAL_S, self.handler_timeout_s + slack_s)
            options["max_poll_interval_ms"] = int(longest_s * 1000)
            return
        allowed_s = poll_ms / 1000 - slack_s
        if not self._timeout_given:
            self.handler_timeout_s = max(self.handler_timeout_s, allowed_s)
        elif self.handler_timeout_s > allowed_s:
            logger.warning(
                "the handler time limit is longer than the poll interval allows; a slow handler will"
                " get this member evicted from its group before it times out",
                extra={
                    "consumer_group": self.group_id,
                    "handler_timeout_s": self.handler_timeout_s,
                    "max_poll_interval_ms": poll_ms,
                },
            )

    async def deliver(
        self, batch: Sequence[tuple[KafkaRecord, Origin]], on_outcome: Callable[[Outcome], None] | None = None
    ) -> list[Outcome]:
        """Process one delivery of the broker (what ``subscribe`` calls); raising makes the broker
        deliver the batch again. A failure outside the retry policy is counted in ``progress`` and
        waited out with the policy's backoff before it is raised, so a delivery that keeps failing
        is neither a busy loop nor unnoticed."""
        outcomes: list[Outcome] = []
        try:
            if self.handles_batches:
                outcomes = await self.process_batch(batch)
                for outcome in outcomes:
                    if on_outcome is not None:
                        on_outcome(outcome)
            else:
                for record, origin in batch:
                    outcome = await self.process(record, origin)
                    outcomes.append(outcome)
                    if on_outcome is not None:
                        on_outcome(outcome)
        except Exception as error:
            retried, self._retry_raised = self._retry_raised, None
            if (fault := infrastructure_fault(error)) is not None:
                self.progress.infrastructure_fault(fault, batch[0][1] if batch else None, error)
                logger.error(
                    f"{FAULT_MEANINGS[fault]}: nothing is committed or dead-lettered, and the delivery is tried"
                    " again until it goes through",
                    extra={
                        "consumer_group": self.group_id,
                        "failures_in_a_row": self.progress.consecutive_failures,
                        "error": repr(error),
                    },
                )
                await asyncio.sleep(self.retry.backoff(self.progress.consecutive_failures))
            elif error is not retried:  # the policy's own redelivery is counted (and waited) already
                self.progress.failed(batch[0][1] if batch else None, error)
                logger.warning(
                    "delivery failed; it will be redelivered",
                    extra={
                        "consumer_group": self.group_id,
                        "failures_in_a_row": self.progress.consecutive_failures,
                        "error": repr(error),
                    },
                )
                await asyncio.sleep(self.retry.backoff(self.progress.consecutive_failures))
            raise
        self.progress.delivered(len(batch))
        try:
            self._processed.maybe_prune()
        except Exception:  # housekeeping: never fail (and redeliver) a delivery that succeeded
            logger.exception("pruning the processed-events state failed; it is tried again later")
        if self._faults is not None:
            self._faults.delivered()  # tests only: kill_before_commit
        return outcomes

    async def process(self, record: KafkaRecord, origin: Origin) -> Outcome:
        return (await self._process_batch([(record, origin)]))[0]

    async def _process_one(self, record: KafkaRecord, origin: Origin) -> Outcome:
        token = _CURRENT_ORIGIN.set(origin)
        try:
            return await self._process(record, origin)
        finally:
            _CURRENT_ORIGIN.reset(token)

    async def process_batch(self, batch: Sequence[tuple[KafkaRecord, Origin]]) -> list[Outcome]:
        """Process a batch of messages in order; returns each message's outcome.

        Consecutive events of a type with a batch handler form a run that the handler applies in
        one call; runs and per-event messages keep their order. A handler's ``Rejected`` verdict
        dead-letters that event alone. If the batch handler raises, the run is retried one event
        at a time, so the event that fails is isolated: it is redelivered (the exception
        propagates after the retry policy's backoff, the batch's offsets are not committed) until
        the policy gives up and then dead-lettered, while the events before it stay applied and
        are skipped on redelivery.
        """
        return await self._process_batch(batch)

    async def _process_batch(self, batch: Sequence[tuple[KafkaRecord, Origin]]) -> list[Outcome]:
        self._write_what_the_disk_refused()
        outcomes: list[Outcome | None] = [None] * len(batch)
        for index in self._dead_lettered_before(batch):
            outcomes[index] = Outcome.DUPLICATE
        if not self._batch_handlers:
            for index, (record, origin) in enumerate(batch):
                if outcomes[index] is None:
                    outcomes[index] = await self._process_one(record, origin)
            return [outcome if outcome is not None else Outcome.IGNORED for outcome in outcomes]
        decoded: list[tuple[int, Envelope[Any]]] = []
        for index, (record, origin) in enumerate(batch):
            if outcomes[index] is not None:
                continue
            peeked = _peek_type(record) or ""
            if peeked in self._handlers and peeked not in self._batch_handlers:
                continue  # a per-event type: decoded (and de-duplicated) by _process in its turn
            envelope = await self._decode(record, origin)
            if envelope is None:
                outcomes[index] = Outcome.DEAD_LETTERED
            else:
                decoded.append((index, envelope))
        done = self._processed.processed_among([envelope.id for _, envelope in decoded])
        envelopes: dict[int, Envelope[Any]] = {}
        for index, envelope in decoded:
            if envelope.type not in self._batch_handlers:
                if envelope.type not in self._handlers:
                    outcomes[index] = Outcome.IGNORED
                continue
            if envelope.id in done:  # applied before, or earlier in this batch
                outcomes[index] = Outcome.DUPLICATE
                continue
            done.add(envelope.id)
            envelopes[index] = envelope

        run: list[int] = []
        for index, (record, origin) in enumerate(batch):
            if index in envelopes:
                if run and envelopes[run[0]].type != envelopes[index].type:
                    await self._apply_run(batch, run, envelopes, outcomes)
                    run = []
                run.append(index)
                continue
            if outcomes[index] is not None:
                continue
            if run:
                await self._apply_run(batch, run, envelopes, outcomes)
                run = []
            outcomes[index] = await self._process_one(record, origin)
        if run:
            await self._apply_run(batch, run, envelopes, outcomes)
        return [outcome if outcome is not None else Outcome.IGNORED for outcome in outcomes]

    async def _apply_run(
        self,
        batch: Sequence[tuple[KafkaRecord, Origin]],
        run: list[int],
        envelopes: Mapping[int, Envelope[Any]],
        outcomes: list[Outcome | None],
    ) -> None:
        handler = self._batch_handlers[envelopes[run[0]].type]
        if len(run) > 1:
            # A run counts no attempt per message: it is marked as started (a row per partition, not
            # per message, which would cost ingestion ~5% of its throughput) and cleared when done.
            ranges = _run_ranges(batch[index][1] for index in run)
            if self._attempted_before(run, batch, ranges):
                # An earlier attempt at (part of) this run never finished: the process died in it.
                # Which message did it is unknown, so each is applied alone and uses its own attempts.
                logger.warning(
                    "an attempt at these events never finished; applying them one at a time",
                    extra={"events": len(run), "first_offset": batch[run[0]][1].offset},
                )
                await self._apply_one_by_one(batch, run, envelopes, outcomes, ranges)
                return
            self._processed.start_runs(ranges)
            keys: list[AttemptKey] = []
        else:
            ranges = []
            keys = [_attempt_key(*batch[run[0]])]
            (before,) = self._start_attempts(keys)  # durable before the handler runs
            if before >= self.retry.max_attempts:
                record, origin = batch[run[0]]
                outcomes[run[0]] = await self._attempts_exhausted(record, origin, keys[0], before)
                return
        deliveries = [Delivery(envelopes[index], batch[index][1]) for index in run]
        try:
            traceparents = [traceparent_of(batch[index][0], envelopes[index].traceparent) for index in run]
            verdicts = await self._timed(self._call_batch(handler, deliveries, traceparents))
        except asyncio.CancelledError:  # stopped, not failed
            if keys:
                self._processed.undo_attempts(keys)
            else:
                self._processed.end_runs(ranges)
            raise
        except Exception as error:
            if infrastructure_fault(error) is not None:  # not the events' fault: no attempt used, the delivery fails
                self._forget_attempts(keys, ranges)
                raise
            if len(run) > 1:
                logger.warning(
                    "batch handler failed; applying its events one at a time",
                    extra={"events": len(run), "error": repr(error)},
                )
                self._processed.end_runs(ranges)  # it failed as a whole: no message used an attempt
                await self._apply_one_by_one(batch, run, envelopes, outcomes, ranges)
                return
            record, origin = batch[run[0]]
            outcomes[run[0]] = await self._handler_failed(record, origin, envelopes[run[0]].id, error, keys[0])
            return
        if len(verdicts) != len(run):
            raise RuntimeError(f"batch handler returned {len(verdicts)} verdicts for {len(run)} events")
        if self._faults is not None:  # tests only: kill_after_effect
            self._faults.applied(envelopes[run[0]].type, sum(verdict is None for verdict in verdicts))
        applied: list[str] = []
        for index, verdict in zip(run, verdicts, strict=True):
            record, origin = batch[index]
            if verdict is None:
                applied.append(envelopes[index].id)
                outcomes[index] = Outcome.HANDLED
                continue
            outcomes[index] = await self._dead_letter(
                record, origin, stage=verdict.stage, reason=verdict.reason, detail=verdict.detail
            )
        # A handler whose effect lives in this database marks its events in its own transaction
        # (exactly-once in effect): only the events it left unmarked are marked here.
        marked = self._processed.processed_among(applied)
        unmarked = [event_id for event_id in applied if event_id not in marked]
        try:
            self._processed.finish(unmarked, keys if applied else [], ranges)
        except Exception as error:
            # Applied, not recorded: the redelivery applies it again, uncounted.
            if infrastructure_fault(error) is not None:
                self._forget_attempts(keys if applied else [], ranges)
            raise
        self._settled(keys)

    async def _apply_one_by_one(
        self,
        batch: Sequence[tuple[KafkaRecord, Origin]],
        run: list[int],
        envelopes: Mapping[int, Envelope[Any]],
        outcomes: list[Outcome | None],
        ranges: Sequence[RunRange],
    ) -> None:
        for index in run:
            await self._apply_run(batch, [index], envelopes, outcomes)
        self._processed.end_runs(ranges)  # every message of the run is applied or dead-lettered

    def _attempted_before(
        self, run: Sequence[int], batch: Sequence[tuple[KafkaRecord, Origin]], ranges: Sequence[RunRange]
    ) -> bool:
        """Whether a run over these messages was started and never finished, or any of them has an
        attempt on record (a couple of range queries per partition; nearly always nothing)."""
        for topic, partition, first, last in ranges:
            if self._processed.run_started_within(topic, partition, first, last):
                return True
            found = self._processed.attempts_between(topic, partition, first, last)
            if not found:
                continue
            for index in run:
                record, origin = batch[index]
                if origin.topic == topic and origin.partition == partition and origin.offset in found:
                    attempts, fingerprint = found[origin.offset]
                    if attempts > 0 and fingerprint == _fingerprint(record):
                        return True
        return False

    async def _timed(self, call: Awaitable[T]) -> T:
        """Await ``call`` within the handler time limit; past it, ``HandlerTimeout``."""
        scope = asyncio.timeout(self.handler_timeout_s)
        try:
            async with scope:
                return await call
        except TimeoutError as error:
            if scope.expired():
                raise HandlerTimeout(f"handler did not finish within {self.handler_timeout_s:g}s") from error
            raise

    async def _call_batch(
        self, handler: BatchHandler, deliveries: list[Delivery], traceparents: list[str | None]
    ) -> Sequence[Rejected | None]:
        first = deliveries[0].origin
        with batch_consumer_span(
            f"{first.topic} process",
            traceparents=traceparents,
            attributes={
                "messaging.consumer.group.name": self.group_id,
                "messaging.batch.message_count": len(deliveries),
            },
        ):
            return await handler(deliveries)

    async def _process(self, record: KafkaRecord, origin: Origin) -> Outcome:
        envelope = await self._decode(record, origin)
        if envelope is None:
            return Outcome.DEAD_LETTERED

        handler = self._handlers.get(envelope.type)
        if handler is None or envelope.type in self._batch_handlers:
            return Outcome.IGNORED
        if self._processed.has_processed(envelope.id):
            logger.info("duplicate event skipped", extra={"event_id": envelope.id, "event_type": envelope.type})
            return Outcome.DUPLICATE

        key = _attempt_key(record, origin)
        (before,) = self._start_attempts([key])  # durable before the handler runs
        if before >= self.retry.max_attempts:
            return await self._attempts_exhausted(record, origin, key, before)
        with consumer_span(
            f"{origin.topic} process",
            traceparent=traceparent_of(record, envelope.traceparent),
            attributes={"messaging.consumer.group.name": self.group_id, "cloudevents.event_id": envelope.id},
        ):
            task = asyncio.current_task()
            token = _CURRENT_EVENT.set((envelope.id, weakref.ref(task)) if task is not None else None)
            try:
                await self._timed(handler(envelope))
            except Rejected as rejection:
                return await self._dead_letter(
                    record, origin, stage=rejection.stage, reason=rejection.reason, detail=rejection.detail
                )
            except asyncio.CancelledError:
                self._processed.undo_attempts([key])  # the service is stopping: not the message's fault
                raise
            except Exception as error:
                # Not the message's fault: no attempt used, the delivery fails.
                if infrastructure_fault(error) is not None:
                    self._forget_attempts([key], [])
                    raise
                return await self._handler_failed(record, origin, envelope.id, error, key)
            finally:
                _CURRENT_EVENT.reset(token)
        if self._faults is not None:  # tests only: kill_after_effect
            self._faults.applied(envelope.type)
        try:
            self._processed.finish([envelope.id], [key])
        except Exception as error:
            # Applied, not recorded: the redelivery applies it again, uncounted.
            if infrastructure_fault(error) is not None:
                self._forget_attempts([key], [])
            raise
        self._settled([key])
        return Outcome.HANDLED

    async def _decode(self, record: KafkaRecord, origin: Origin) -> Envelope[Any] | None:
        """The message's envelope, or None once it is on the DLQ. Whatever decoding raises, it is
        this message's fault alone (a JSON bomb, a bug of a library on odd input): it never fails
        the batch, which would be redelivered forever."""
        try:
            return decode(record)
        except DecodeError as error:
            await self._dead_letter(record, origin, stage="decode", reason=error.reason, detail=error.detail)
        except Exception as error:
            logger.exception("decoding raised an unexpected error", extra={"offset": origin.offset})
            await self._dead_letter(
                record,
                origin,
                stage="decode",
                reason=DeadLetterReason.UNDECODABLE,
                detail=f"decoding raised {type(error).__name__}: {error}",
            )
        return None

    async def _handler_failed(
        self, record: KafkaRecord, origin: Origin, event_id: str, error: Exception, key: AttemptKey
    ) -> Outcome:
        """The one place a handler's failure is decided: wait the policy's backoff and raise (the
        batch is redelivered from its first message), or, once the policy gives up, dead-letter.
        The attempts (this one included) and the time of the first failure come from the state
        database, so they count across restarts of the process."""
        now = self._clock()
        attempts = self._processed.record_failure(key, at=now, error=repr(error))
        first_failed_at = attempts.first_failed_at if attempts.first_failed_at is not None else now
        elapsed = max(0.0, now - first_failed_at)
        if self.retry.exhausted(attempts.count, elapsed):
            return await self._dead_letter(
                record,
                origin,
                stage="handle",
                reason=DeadLetterReason.HANDLER_FAILED,
                detail=f"failed {attempts.count} times in {elapsed:.1f}s; last error: {error!r}",
            )
        delay = self.retry.delay(attempts.count, elapsed)
        logger.warning(
            "handler failed, message will be redelivered",
            extra={
                "event_id": event_id,
                "attempt": attempts.count,
                "retry_in_s": round(delay, 3),
                "error": repr(error),
            },
        )
        self.progress.retrying(origin, attempts.count, error)
        await asyncio.sleep(delay)
        self._retry_raised = error
        raise error

    async def _attempts_exhausted(self, record: KafkaRecord, origin: Origin, key: AttemptKey, started: int) -> Outcome:
        """The message's handler was started as often as the policy allows and did not come back
        from the last attempt (it killed or hung the process): dead-letter it without a new one."""
        known = self._processed.attempts(key)
        last_error = f"; last error: {known.last_error}" if known is not None and known.last_error else ""
        logger.error(
            "a message's handler never finished in its attempts; dead-lettering it unhandled",
            extra={
                "consumer_group": self.group_id,
                "topic": origin.topic,
                "offset": origin.offset,
                "attempts": started,
            },
        )
        return await self._dead_letter(
            record,
            origin,
            stage="handle",
            reason=DeadLetterReason.ATTEMPTS_EXHAUSTED,
            detail=(
                f"the handler was started {started} attempts of {self.retry.max_attempts} and did not return"
                f" from the last (the process died, was killed or hung){last_error}"
            ),
        )

    async def _dead_letter(
        self, record: KafkaRecord, origin: Origin, *, stage: str, reason: str, detail: str
    ) -> Outcome:
        """Send the message to the DLQ, then remember its position so a redelivery skips it."""
        await self._dlq.send(record, origin=origin, stage=stage, reason=reason, detail=detail)
        fingerprint = _fingerprint(record)
        try:
            self._processed.mark_dead_lettered(
                origin.topic, origin.partition, origin.offset, fingerprint=fingerprint, reason=reason
            )
        except Exception as error:
            if infrastructure_fault(error) is None:
                raise
            # The DLQ has it; remembered here until the mark can be written, so a redelivery of the
            # batch (the disk is full: it will fail further on) does not send it to the DLQ again.
            self._unmarked_dead_letters[(origin.topic, origin.partition, origin.offset)] = (fingerprint, reason)
        if self._uncounted:
            self._settled([(origin.topic, origin.partition, origin.offset, fingerprint)])
        return Outcome.DEAD_LETTERED

    def _dead_lettered_before(self, batch: Sequence[tuple[KafkaRecord, Origin]]) -> set[int]:
        """Indices of the messages of ``batch`` this group has sent to the DLQ already."""
        by_partition: dict[tuple[str, int], list[int]] = defaultdict(list)
        for index, (_, origin) in enumerate(batch):
            by_partition[(origin.topic, origin.partition)].append(index)
        found: set[int] = set()
        for (topic, partition), indices in by_partition.items():
            offsets = [batch[index][1].offset for index in indices]
            marks = self._processed.dead_lettered_between(topic, partition, min(offsets), max(offsets))
            for (marked_topic, marked_partition, offset), (fingerprint, _) in self._unmarked_dead_letters.items():
                if (marked_topic, marked_partition) == (topic, partition):
                    marks.setdefault(offset, fingerprint)
            if not marks:
                continue
            for index in indices:
                record, origin = batch[index]
                if marks.get(origin.offset) == _fingerprint(record):
                    found.add(index)
        return found

    # --- a full disk: state writes it refused -----------------------------------------------------

    def _start_attempts(self, keys: Sequence[AttemptKey]) -> list[int]:
        """``ProcessedEvents.start_attempts``, less the attempts a full disk kept from being taken back."""
        before = self._processed.start_attempts(keys)
        if not self._uncounted:
            return before
        return [max(0, count - self._uncounted.get(key, 0)) for key, count in zip(keys, before, strict=True)]

    def _forget_attempts(self, keys: Sequence[AttemptKey], ranges: Sequence[RunRange]) -> None:
        """The attempt at these messages (or this run) ended on a full disk: take it back, in the state
        database if it can still be written, else in memory (see ``_start_attempts``)."""
        if ranges:
            try:
                self._processed.end_runs(ranges)
            except Exception as error:
                if infrastructure_fault(error) is None:
                    raise
                self._stale_runs.extend(ranges)
        if keys:
            try:
                self._processed.undo_attempts(keys)
            except Exception as error:
                if infrastructure_fault(error) is None:
                    raise
                for key in keys:
                    self._uncounted[key] = self._uncounted.get(key, 0) + 1

    def _settled(self, keys: Sequence[AttemptKey]) -> None:
        """These messages are applied or dead-lettered: their attempts are of no more interest."""
        if self._uncounted:
            for key in keys:
                self._uncounted.pop(key, None)

    def _write_what_the_disk_refused(self) -> None:
        """Write the run markers to clear and the DLQ marks that a full disk refused; best effort (on a
        full disk they wait for the next delivery). Nearly always nothing to do."""
        if self._stale_runs:
            try:
                self._processed.end_runs(self._stale_runs)
                self._stale_runs = []
            except Exception as error:
                if infrastructure_fault(error) is None:
                    raise
        if self._unmarked_dead_letters:
            for (topic, partition, offset), (fingerprint, reason) in list(self._unmarked_dead_letters.items()):
                try:
                    self._processed.mark_dead_lettered(topic, partition, offset, fingerprint=fingerprint, reason=reason)
                except Exception as error:
                    if infrastructure_fault(error) is None:
                        raise
                    return
                del self._unmarked_dead_letters[(topic, partition, offset)]


def subscribe(
    broker: KafkaBroker,
    consumer: EventConsumer,
    *topics: str,
    on_outcome: Callable[[Outcome], None] | None = None,
    max_records: int = 2000,
    **subscriber_options: Any,
) -> Any:
    """Attach ``consumer`` to ``broker`` for ``topics``; offsets are committed after processing.

    Messages arrive in batches of up to ``max_records`` and the offsets of a batch are committed
    once, after every message in it was processed: one commit per message would cap a consumer
    at a few hundred messages a second. If processing fails part-way, the batch is redelivered
    from its first message and the already-applied events are skipped as duplicates.
    """
    options: dict[str, Any] = {
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "batch": True,
        "max_records": max_records,
        "batch_timeout_ms": 200,
    }
    if consumer.handles_batches:
        # The handler reads the raw records; FastStream's default decoder would also build a
        # message object and json.loads every body of the batch, ~15% of a busy consumer's time.
        options["decoder"] = _undecoded_bodies
    options.update(subscriber_options)
    consumer.fit_poll_interval(options)
    subscriber = broker.subscriber(*topics, group_id=consumer.group_id, **options)

    @subscriber
    async def on_messages(message: KafkaMessage) -> None:
        raw = message.raw_message
        items = raw if isinstance(raw, tuple) else (raw,)
        batch = [
            (
                KafkaRecord(key=item.key, value=item.value or b"", headers=tuple(item.headers or ())),
                Origin(item.topic, item.partition, item.offset, consumer.group_id),
            )
            for item in items
        ]
        await consumer.deliver(batch, on_outcome)

    watch(consumer)
    return subscriber


def _attempt_key(record: KafkaRecord, origin: Origin) -> AttemptKey:
    return (origin.topic, origin.partition, origin.offset, _fingerprint(record))


def _run_ranges(origins: Iterable[Origin]) -> list[RunRange]:
    """The offsets a run covers, one range per partition."""
    bounds: dict[tuple[str, int], tuple[int, int]] = {}
    for origin in origins:
        part = (origin.topic, origin.partition)
        first, last = bounds.get(part, (origin.offset, origin.offset))
        bounds[part] = (min(first, origin.offset), max(last, origin.offset))
    return [(topic, partition, first, last) for (topic, partition), (first, last) in bounds.items()]


def _fingerprint(record: KafkaRecord) -> str:
    """Tells two messages at one position apart (a topic deleted and created again)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (record.key or b"", record.value):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _peek_type(record: KafkaRecord) -> str | None:
    """The event type of a binary-mode message from its ``ce_type`` header, without decoding;
    None for structured mode (the type is inside the value)."""
    value = record.header("ce_type")
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


async def _undecoded_bodies(message: Any) -> Any:
    """A FastStream decoder that leaves the bodies as they came (the handler decodes them)."""
    return message.body
