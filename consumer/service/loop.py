"""The service loop. It only coordinates; each step is a call:

poll a batch -> follow the group's assignment (acquire new partitions, read each from
its applied offset; :mod:`consumer.service.ownership`) -> run the batch through the commit
protocol (:mod:`consumer.service.checkpoint`) -> record metrics -> repeat, until stopped
(SIGTERM/SIGINT) or, with ``stop_when_idle``, caught up. A stop waits for the batch in
flight at most ``TIERSTREAM_SHUTDOWN_TIMEOUT_S``; past that the process exits at once with
status :data:`SHUTDOWN_OVERDUE_STATUS` (a batch not committed is read again by whoever
takes the partition: safe, see :mod:`consumer.service.checkpoint`), so the orchestrator's
grace period (Kubernetes' ``terminationGracePeriodSeconds``) is never what ends it.

Faults never end the loop: a fenced batch is dropped and its partitions set right; a
store, broker or publish failure is retried after a pause that grows with the failures
in a row (with jitter), every assigned partition acquired again first. /readyz is false
from a failure until a batch or a probe (Redis ping, a broker answering) succeeds;
/healthz only says the loop is alive, so an outage of Redis or Kafka does not make the
orchestrator restart every instance at once.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from consumer.service.batch import BatchOutcome, BatchStep
from consumer.service.checkpoint import Checkpoint, CheckpointStats, Partition, StepHook
from consumer.service.errors import (
    BrokerError,
    Fenced,
    PublishError,
    StateStoreError,
    StateStoreUnavailable,
)
from consumer.service.forget_forwarder import forwarded
from consumer.service.headers import output_headers
from consumer.service.kafka_io import EventSource, Publisher, ensure_topics
from consumer.service.metrics import HealthServer, Metrics
from consumer.service.model_files import read_model, stored_model
from consumer.service.ownership import Ownership
from consumer.service.records import InputRecord
from consumer.service.redis_store import RedisStateStore
from consumer.service.settings import Settings
from consumer.service.state_store import StateStore
from consumer.service.tier_config import load_engine
from online_models.engine import TierEngine
from online_models.global_model import GlobalModel
from online_models.model_health import ModelHealth
from schemas.decode import EventDecoder

log = logging.getLogger(__name__)
#: Pause after a failed batch before reading it again (Redis or Kafka hiccup), by the
#: number of failures in a row; each pause is drawn within +-50% (jitter), so instances
#: that failed together do not retry together.
RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
#: A batch dead-lettering this many records, or this share of its records, is logged (a
#: burst); every dead letter is counted in ``tierstream_dlq_records_total`` anyway.
DLQ_BURST_RECORDS = 10
DLQ_BURST_SHARE = 0.05

#: Exit status when a stop outlasts ``TIERSTREAM_SHUTDOWN_TIMEOUT_S``.
SHUTDOWN_OVERDUE_STATUS = 4

#: With --stop-when-idle: how long the whole group may make no progress (its lag over
#: every partition not shrinking) before the run gives up with lag left. A member killed
#: without leaving holds its partitions until its session (10 s) expires.
GROUP_PROGRESS_WAIT_S = 60.0
#: While idle, how often Redis and the brokers are probed (what /readyz reports).
PROBE_EVERY_S = 5.0
#: /readyz says "not ready" while the loop has waited this long for a server: the
#: brokers for a batch's outputs' acknowledgement or a call's answer (a commit, an admin
#: request, a poll past its own wait), Redis for a call's; milliseconds when they are up.
#: The loop itself waits, up to the call's timeout (15 s for a commit, 30 s for Redis, a
#: minute for outputs), and cannot probe meanwhile.
SERVER_WAIT_READY_S = 3.0


@dataclass
class RunSummary:
    """Totals of one run, printed by the CLI."""

    batches: int = 0
    records: int = 0
    results: dict[str, int] = field(default_factory=dict)
    tier_changes: int = 0
    republished: int = 0
    retries: int = 0
    #: Batches' learning learnt again on a version another instance wrote meanwhile
    #: (attempts), and batches whose learning was dropped after every attempt.
    learning_rebases: int = 0
    learning_dropped: int = 0
    #: With --stop-when-idle: the group's lag left per input partition (``topic:p``), and
    #: the forget requests not yet forwarded, when the run gave up waiting (empty: every
    #: partition was consumed to its end).
    lag_left: dict[str, int] = field(default_factory=dict)


class Service:
    """One consumer-group member: wires settings to source, store, publisher and core."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: StateStore | None = None,
        metrics: Metrics | None = None,
        on_step: StepHook | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._stop = threading.Event()
        # A bad tier config is named before any server is asked anything.
        load_engine(settings.tiers_path, state_ttl_days=settings.state_ttl_days)
        self.store = store or RedisStateStore(
            settings.redis_url,
            prefix=settings.key_prefix,
            max_timers=settings.max_timers_per_batch,
            topic=settings.input_topic,
        )
        self.store.ping()
        engine = build_engine(settings, self.store)
        kafka = settings.kafka
        log.info("Kafka at %s", kafka.describe())
        ensure_topics(
            kafka,
            [
                settings.output_topic,
                settings.dlq_topic,
                settings.tiers_topic,
                settings.forget_topic,
            ],
            partitions=settings.topic_partitions,
            like=settings.input_topic,
            replication=settings.topic_replication,
            configs={settings.tiers_topic: {"cleanup.policy": "compact"}},
        )
        self.publisher = Publisher(
            kafka,
            headers=output_headers(
                changes=settings.output_topic,
                dlq=settings.dlq_topic,
                tiers=settings.tiers_topic,
                forget_into=settings.input_topic,
            ),
        )
        self.source = EventSource(
            kafka,
            settings.input_topic,
            settings.group_id,
            max_poll_records=settings.max_poll_records,
            also=[settings.forget_topic],
            instance_id=settings.instance if settings.static_membership else "",
            session_timeout_s=settings.kafka_session_timeout_s,
            call_timeout_s=settings.kafka_call_timeout_s,
            stall_s=settings.kafka_stall_s,
        )
        step = BatchStep(
            engine,
            EventDecoder(limits=settings.limits),
            output_topic=settings.output_topic,
            dlq_topic=settings.dlq_topic,
            dlq_max_copy_bytes=settings.dlq_max_copy_bytes,
            instance_id=settings.instance,
            tiers_topic=settings.tiers_topic,
        )
        self.health_model = ModelHealth()
        self.checkpoint = Checkpoint(
            step,
            self.store,
            self.source,
            self.publisher,
            clock_ms=lambda: time.time_ns() // 1_000_000,
            timer=time.perf_counter,
            on_step=on_step,
            on_saved=self._count,
            commit_interval_s=settings.commit_interval_ms / 1000,
            pipelined=True,
        )
        self.ownership = Ownership(
            self.source,
            self.checkpoint,
            self.store,
            on_state_loss=settings.on_state_loss,
            input_topic=settings.input_topic,
            key_prefix=settings.key_prefix,
            on_republished=self._republished,
        )
        self.health: HealthServer | None = None
        self._ready = False
        self._probed_at = -PROBE_EVERY_S
        self._group_lag: tuple[int, float] | None = None
        #: Per owned partition, the newest event time applied (its watermark).
        self._newest_ms: dict[tuple[str, int], int] = {}
        #: The partitions whose series this instance reports (the ones it holds).
        self._reported: set[tuple[str, int]] = set()
        self._drifts = 0
        self._model_name, self._model_since = "", time.monotonic()
        self.forget_decoder = EventDecoder()
        self.summary = RunSummary()

    def stop(self) -> None:
        """Ask the loop to finish its batch and leave (safe from a signal handler), within
        ``shutdown_timeout_s``: a watchdog ends the process when the time is up."""
        if self._stop.is_set():
            return
        self._stop.set()
        watchdog = threading.Timer(self.settings.shutdown_timeout_s, self._overdue)
        watchdog.daemon = True
        watchdog.start()

    def _overdue(self) -> None:
        log.error(
            "the stop did not finish within TIERSTREAM_SHUTDOWN_TIMEOUT_S=%gs: exiting now; "
            "the batch in flight is not committed and is read again after the restart",
            self.settings.shutdown_timeout_s,
        )
        logging.shutdown()
        os._exit(SHUTDOWN_OVERDUE_STATUS)

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop after the batch in flight."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self, *, stop_when_idle: float | None = None) -> RunSummary:
        """Process until stopped, or, with ``stop_when_idle``, until no record arrived for
        that long and the group has consumed every partition to its end (or has made no
        progress for :data:`GROUP_PROGRESS_WAIT_S`: ``summary.lag_left`` says what is left).
        """
        s = self.settings
        if s.metrics_port:
            self.health = HealthServer(
                self.metrics, host=s.metrics_host, port=s.metrics_port, is_ready=self.ready
            )
            self.health.start()
        last_record = time.monotonic()
        failures = 0
        try:
            while not self._stop.is_set():
                if self.health:
                    self.health.beat()
                try:
                    if self._step():
                        last_record = time.monotonic()
                    failures = 0
                    if stop_when_idle is not None and self._idle_done(last_record, stop_when_idle):
                        break
                except Fenced as exc:
                    self._on_fenced(exc)
                    last_record = time.monotonic()  # idle means: nothing to read, not failing
                except (StateStoreError, PublishError, BrokerError) as exc:
                    failures += 1
                    self._on_failure(exc, failures)
                    last_record = time.monotonic()
            self._last_commit()
        finally:
            self._close()
        return self.summary

    def ready(self) -> bool:
        """What /readyz says (from the HTTP server's thread): the last batch or probe
        went through, and the loop has not waited :data:`SERVER_WAIT_READY_S` for the
        brokers or Redis since."""
        return (
            self._ready
            and self.publisher.unacknowledged_for() < SERVER_WAIT_READY_S
            and self.source.overdue_s() < SERVER_WAIT_READY_S
            and self.store.waiting_s() < SERVER_WAIT_READY_S
        )

    def _last_commit(self) -> None:
        """Stopping: the last batch's outputs acknowledged and cleared, and what the
        commit interval held back committed (best effort: outputs not acknowledged stay
        in the outbox, published by the next owner; the next owner reads from the
        store's applied offsets whatever the group committed)."""
        try:
            self.checkpoint.flush_commits()
        except (Fenced, BrokerError, PublishError, StateStoreError) as exc:
            log.warning("the last batch was not settled: %s", exc)

    def _step(self) -> bool:
        """One poll and the batch it brings; True if it brought records."""
        records = self._poll()
        forget = self.settings.forget_topic
        requests = [r for r in records if r.topic == forget]
        if requests:
            self._forward(requests)
            records = [r for r in records if r.topic != forget]
        resync = self.ownership.resync_pending
        records = self.ownership.follow(records)
        self._report_partitions(resync)
        if not records:
            self.checkpoint.flush_commits()  # idle: the group's offsets catch up
            self._probe()
            return False
        self._record(self.checkpoint.run_batch(records), len(records))
        self._ready = True
        return True

    def _poll(self) -> list[InputRecord]:
        """A batch's records: a poll, and while it brought records but fewer than
        ``max_poll_records``, more polls until ``batch_linger_ms`` after the first
        returned (see :attr:`Settings.batch_linger_ms`). One batch of several polls is
        what one longer poll would have brought: a rebalance within it is followed
        once, after the last; an error within it re-reads every partition from its
        applied offset, as an error of any step does. The linger's polls leave the
        forget requests' partitions out of their fetches (``input_only``): idle, they
        would have the broker hold a fetch ``FETCH_WAIT_MS`` whenever the input's were
        left out of it; the next batch's first poll reads them."""
        s = self.settings
        records = self.source.poll(s.poll_timeout_ms)
        if not records or s.batch_linger_ms <= 0:
            return records
        deadline = time.monotonic() + s.batch_linger_ms / 1000
        while (room := s.max_poll_records - len(records)) > 0:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or self._stop.is_set():  # a stop takes the batch as it is
                break
            wait_ms = min(left_ms, s.poll_timeout_ms)  # a stop is seen between polls
            records += self.source.poll(wait_ms, max_records=room, input_only=True)
        return records

    def _report_partitions(self, resync: bool) -> None:
        """Series of the partitions held, and only those: a partition revoked (or taken
        by another owner after a fenced batch) stops being reported here, and a new one
        (every one after a failure) is reported from the store's tier counts."""
        held = set(self.ownership.held)
        gone = self._reported - held
        if gone:
            self.metrics.forget_partitions(gone)
            for tp in gone:
                self._newest_ms.pop(tp, None)
            self._reported -= gone
        self.metrics.assigned_partitions.set(len(held))
        fresh = held if resync else held - self._reported
        if fresh:
            counts = self.store.tier_counts(sorted(fresh))
            for tp, c in counts.items():
                self.metrics.set_population(tp, self._every_tier(c.population))
            self._reported |= fresh

    def _every_tier(self, population: dict[str, int]) -> dict[str, int]:
        """``population`` with every tier of the policy (0 if nobody is in it yet)."""
        return {**dict.fromkeys(self.checkpoint.step.engine.policy.names, 0), **population}

    def _forward(self, requests: list[InputRecord]) -> None:
        """Forget requests into the input topic (:mod:`consumer.service.forget_forwarder`),
        then their offsets committed: at least once, and erasing twice changes nothing."""
        s = self.settings
        self.checkpoint.settle()  # one publication at a time on the producer
        outputs = forwarded(
            requests,
            self.forget_decoder,
            input_topic=s.input_topic,
            dlq_topic=s.dlq_topic,
            dlq_max_copy_bytes=s.dlq_max_copy_bytes,
        )
        self.publisher.publish(outputs)
        ends: dict[tuple[str, int], int] = {}
        for r in requests:
            ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), 0), r.offset + 1)
        self.source.commit(ends)
        n = sum(o.topic == s.input_topic for o in outputs)
        log.info("forwarded %d forget requests into %s", n, s.input_topic)

    def _probe(self) -> None:
        """While idle, /readyz follows whether Redis and the brokers answer."""
        now = time.monotonic()
        if now - self._probed_at < PROBE_EVERY_S:
            return
        self._probed_at = now
        try:
            self.store.ping()
            redis_ok = True
        except StateStoreUnavailable as exc:
            log.warning("%s", exc)
            redis_ok = False
        kafka_ok = self.source.reachable()
        if not kafka_ok:
            log.warning("no Kafka broker answers")
        self._ready = redis_ok and kafka_ok
        if not self._ready:
            self.ownership.resync_pending = True

    def _idle_done(self, last_record: float, idle_s: float) -> bool:
        now = time.monotonic()
        if now - last_record < idle_s:
            return False
        try:  # the forget topic's lag counts too: a request not yet forwarded
            lag = {f"{t}:{p}": n for (t, p), n in self.source.group_lag().items()}
        except BrokerError as exc:  # e.g. a group still rebalancing: ask again
            log.info("cannot tell yet whether the group is done: %s", exc)
            return False
        total = sum(lag.values())
        if total == 0:
            log.info(
                "caught up: every partition of %s consumed to its end by group %s",
                self.settings.input_topic,
                self.settings.group_id,
            )
            return True
        if self._group_lag is None or total < self._group_lag[0]:
            self._group_lag = (total, now)  # the group is moving: keep waiting
            return False
        if now - self._group_lag[1] >= max(idle_s, GROUP_PROGRESS_WAIT_S):
            self.summary.lag_left = {p: n for p, n in lag.items() if n}
            log.warning(
                "stopping with %d records of %s left unconsumed by the group (%s): "
                "no progress for %.0f s",
                total,
                self.settings.input_topic,
                sorted(self.summary.lag_left),
                now - self._group_lag[1],
            )
            return True
        return False

    def _republished(self, n: int) -> None:
        self.metrics.outputs_republished.inc(n)
        self.summary.republished += n

    def _on_fenced(self, exc: Fenced) -> None:
        self.metrics.batch_errors.labels(type(exc).__name__).inc()
        self.summary.retries += 1
        log.warning("batch fenced: %s", exc)
        try:
            self.ownership.fenced(exc)
        except (StateStoreError, BrokerError, PublishError) as more:
            self._on_failure(more, 1)

    def _on_failure(self, exc: Exception, failures: int) -> None:
        kind = type(exc).__name__
        self.metrics.batch_errors.labels(kind).inc()
        self.summary.retries += 1
        base = RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S)) - 1]
        delay = base * random.uniform(0.5, 1.5)
        log.warning(
            "batch failed (%s: %s); reading it again in %.1f s",
            kind,
            exc,
            delay,
            extra={"event": "retry", "error": kind, "delay_s": round(delay, 3)},
        )
        self._ready = False
        self.ownership.resync_pending = True
        self._stop.wait(delay)

    def _record(self, stats: CheckpointStats, n: int) -> None:
        """A batch went through every step: its timings, the model, the lag."""
        m, out = self.metrics, stats.outcome
        m.batch_records.observe(n)
        m.batch_duration.observe(stats.load_s + stats.save_s + stats.publish_s)
        m.redis_duration.labels("load").observe(stats.load_s)
        m.redis_duration.labels("save").observe(stats.save_s)
        models = self.checkpoint.step.engine.models
        if out.learning_rebases:
            m.learning_rebases.inc(out.learning_rebases)
            self.summary.learning_rebases += out.learning_rebases
        if out.learning_dropped:
            m.learning_dropped.inc()
            self.summary.learning_dropped += 1
        if out.model_advanced:
            log.info(
                "model %s, folding in the learning of %s",
                models.model.name,
                ", ".join(out.folded),
                extra={
                    "event": "model_version",
                    "model_version": models.model.name,
                    "folded": list(out.folded),
                },
            )
        self._record_model(models.model)
        now = time.time()
        held = set(self.ownership.held)
        for (topic, p), behind in self.source.lags().items():
            m.lag.labels(topic, str(p)).set(behind)
        for (topic, p), wm in self._newest_ms.items():
            if (topic, p) in held:
                m.event_lag.labels(topic, str(p)).set(max(0.0, now - wm / 1000))
        self.summary.batches += 1

    def _count(self, out: BatchOutcome, partitions: Sequence[Partition] | None) -> None:
        """A batch's partitions are saved (step 3a; ``partitions``: the ones written
        before 3a failed, None: all): count what their records did. Counted here, not
        once the batch is through: a partition saved is not read again (the next read
        starts after its applied offset), whatever happens to the later steps, so its
        records would never be counted. The labels the batch resolved are observed only
        when the whole batch is saved (a partial save reads the rest again, which
        resolves them again)."""
        m, t = self.metrics, out.total(partitions)
        n = sum(t.results.values())
        for result, count in t.results.items():
            m.events.labels(result).inc(count)
            self.summary.results[result] = self.summary.results.get(result, 0) + count
        for reason, count in t.dlq_reasons.items():
            m.dlq.labels(reason).inc(count)
        dead = sum(t.dlq_reasons.values())
        if dead >= DLQ_BURST_RECORDS or (dead and dead >= DLQ_BURST_SHARE * n):
            log.info(
                "dead-lettered %d records (%s)",
                dead,
                ", ".join(f"{r}: {k}" for r, k in sorted(t.dlq_reasons.items())),
                extra={"event": "dead_letters", "count": dead, "reasons": dict(t.dlq_reasons)},
            )
        for change in t.changes:
            m.tier_changes.labels(change.previous_tier or "none", change.tier or "erased").inc()
        m.last_batch_time.set(time.time())
        m.timers_fired.inc(t.timers_fired)
        m.users_expired.inc(t.expired)
        if partitions is None:
            if out.max_event_ms is not None:
                m.last_event_time.set(out.max_event_ms / 1000)
            self.health_model.observe(out.resolved, out.changes)
            for r in out.resolved:
                m.conversions.labels(
                    r.tier or "none",
                    "control" if r.control else "treated",
                    "converted" if r.label else "not_converted",
                ).inc()

        def saved(tp: Partition) -> bool:
            return partitions is None or tp in partitions

        self._newest_ms.update({tp: w for tp, w in out.save.watermarks.items() if saved(tp)})
        held = set(self.ownership.held)
        for tp, population in out.populations.items():
            if tp in held and saved(tp):
                m.set_population(tp, self._every_tier(population))
        self.summary.records += n
        self.summary.tier_changes += len(t.changes)

    def _record_model(self, model: GlobalModel) -> None:
        m, h = self.metrics, self.health_model
        m.model_version.set(model.version)
        m.model_samples.set(model.samples_seen)
        m.model_labels.set(model.labels_seen)
        m.segments.set(len(model.centroids))
        if model.silhouette is not None:
            m.segment_silhouette.set(model.silhouette)
        if h.auc is not None:
            m.propensity_auc.set(h.auc)
        if h.log_loss is not None:
            m.propensity_log_loss.set(h.log_loss)
        if h.drifts > self._drifts:
            m.drift_detections.inc(h.drifts - self._drifts)
        self._drifts = h.drifts
        if model.name != self._model_name:
            self._model_name, self._model_since = model.name, time.monotonic()
        m.model_age.set(time.monotonic() - self._model_since)
        m.tier_flaps.set(h.flaps)

    def _close(self) -> None:
        self._ready = False
        for close in (
            self.source.close,
            self.publisher.close,
            self.store.close,
        ):
            try:
                close()
            except Exception:  # closing is best effort: the batch is already committed
                log.exception("error while closing")
        if self.health:
            self.health.stop()


def build_engine(settings: Settings, store: StateStore) -> TierEngine:
    """The engine of a live instance: the stored global model (or the model file), and
    this instance's stored learning, so a restart continues where it stopped."""
    contribution = None
    model: GlobalModel | None
    if settings.model_file:
        model = read_model(Path(settings.model_file))
    else:
        raw = store.get_model()
        model = stored_model(raw) if raw else None
        own = None if settings.freeze_model else store.get_contribution(settings.instance)
        contribution = orjson.loads(own) if own else None
    return load_engine(
        settings.tiers_path,
        model=model,
        contribution=contribution,
        frozen=settings.freeze_model or bool(settings.model_file),
        state_ttl_days=settings.state_ttl_days,
    )
