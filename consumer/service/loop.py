"""The service loop. It only coordinates; each step is a call:

recover pending outboxes of newly owned partitions -> poll a batch -> run it through the
commit protocol (:mod:`consumer.service.checkpoint`) -> record metrics -> repeat, until stopped
(SIGTERM/SIGINT) or idle for ``stop_when_idle`` seconds.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from consumer.service.batch import BatchStep
from consumer.service.checkpoint import Checkpoint, CheckpointStats, StepHook
from consumer.service.errors import Fenced, PublishError, StateStoreError
from consumer.service.kafka_io import EventSource, Publisher, ensure_topics
from consumer.service.metrics import HealthServer, Metrics
from consumer.service.model_files import read_model
from consumer.service.settings import Settings
from consumer.service.state_store import RedisStateStore, StateStore
from consumer.service.tier_config import load_engine
from online_models.engine import TierEngine
from online_models.global_model import GlobalModel
from online_models.model_health import ModelHealth
from schemas.decode import EventDecoder

log = logging.getLogger(__name__)
#: Pause after a failed batch before reading it again (Redis or Kafka hiccup).
RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
#: With --stop-when-idle, how long to wait for a first partition assignment: a member
#: killed without leaving holds its partitions until its session (10 s) expires.
ASSIGNMENT_WAIT_S = 60.0


@dataclass
class RunSummary:
    """Totals of one run, printed by the CLI."""

    batches: int = 0
    records: int = 0
    results: dict[str, int] = field(default_factory=dict)
    tier_changes: int = 0
    republished: int = 0
    retries: int = 0


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
        load_engine(settings.tiers_path)  # a bad tier config is named before any server
        self.store = store or RedisStateStore(
            settings.redis_url,
            prefix=settings.key_prefix,
            ttl_seconds=round(settings.state_ttl_days * 86400),
        )
        self.store.ping()
        engine = build_engine(settings, self.store)
        ensure_topics(
            settings.kafka_bootstrap,
            [settings.output_topic, settings.dlq_topic],
            partitions=settings.topic_partitions,
            like=settings.input_topic,
            connect_timeout_s=settings.kafka_connect_timeout_s,
        )
        self.publisher = Publisher(
            settings.kafka_bootstrap, connect_timeout_s=settings.kafka_connect_timeout_s
        )
        self.source = EventSource(
            settings.kafka_bootstrap,
            settings.input_topic,
            settings.group_id,
            max_poll_records=settings.max_poll_records,
            connect_timeout_s=settings.kafka_connect_timeout_s,
        )
        step = BatchStep(
            engine,
            EventDecoder(limits=settings.limits),
            output_topic=settings.output_topic,
            dlq_topic=settings.dlq_topic,
            dlq_max_copy_bytes=settings.dlq_max_copy_bytes,
            instance_id=settings.instance,
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
        )
        self.health: HealthServer | None = None
        self._ready = False
        self._unassigned_since: float | None = None
        self.summary = RunSummary()

    def stop(self) -> None:
        """Ask the loop to finish its batch and leave (safe from a signal handler)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the loop after the batch in flight."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self, *, stop_when_idle: float | None = None) -> RunSummary:
        """Process until stopped, or until no record arrived for ``stop_when_idle`` s."""
        s = self.settings
        if s.metrics_port:
            self.health = HealthServer(
                self.metrics, host=s.metrics_host, port=s.metrics_port, is_ready=lambda: self._ready
            )
            self.health.start()
        owned: set[tuple[str, int]] = set()
        last_record = time.monotonic()
        failures = 0
        try:
            while not self._stop.is_set():
                if self.health:
                    self.health.beat()
                records = self.source.poll(s.poll_timeout_ms)
                try:
                    assigned = self.source.assignment()
                    if assigned != owned:
                        self._on_assignment(assigned - owned)
                        owned = assigned
                        self._unassigned_since = None
                    if records:
                        self._record(self.checkpoint.run_batch(records), len(records))
                        last_record = time.monotonic()
                    failures = 0
                except (Fenced, StateStoreError, PublishError) as exc:
                    failures += 1
                    owned = set()  # re-check every outbox before going on
                    self._on_failure(exc, failures)
                    continue
                if stop_when_idle is not None and self._idle_done(
                    owned, last_record, stop_when_idle
                ):
                    break
                if not owned:
                    last_record = time.monotonic()  # idle time counts only while assigned
        finally:
            self._close()
        return self.summary

    def _idle_done(self, owned: set[tuple[str, int]], last_record: float, idle_s: float) -> bool:
        now = time.monotonic()
        if owned:
            if now - last_record >= idle_s:
                log.info("no record for %.1f s: stopping", idle_s)
                return True
            return False
        if self._unassigned_since is None:
            self._unassigned_since = now
        if now - self._unassigned_since >= max(idle_s, ASSIGNMENT_WAIT_S):
            log.warning(
                "no partition of %s assigned for %.0f s: stopping",
                self.settings.input_topic,
                now - self._unassigned_since,
            )
            return True
        return False

    def _on_assignment(self, new: set[tuple[str, int]]) -> None:
        self._ready = False
        self.metrics.assigned_partitions.set(len(self.source.assignment()))
        n = self.checkpoint.recover(sorted(new))
        if n:
            self.metrics.outputs_republished.inc(n)
            self.summary.republished += n
        self._ready = True

    def _on_failure(self, exc: Exception, failures: int) -> None:
        kind = type(exc).__name__
        self.metrics.batch_errors.labels(kind).inc()
        self.summary.retries += 1
        delay = RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S)) - 1]
        log.warning("batch failed (%s: %s); reading it again in %.1f s", kind, exc, delay)
        self._ready = False
        self._stop.wait(delay)
        self.source.rewind(self.source.assignment())

    def _record(self, stats: CheckpointStats, n: int) -> None:
        m, out = self.metrics, stats.outcome
        m.batch_records.observe(n)
        m.batch_duration.observe(stats.load_s + stats.save_s + stats.publish_s)
        m.redis_duration.labels("load").observe(stats.load_s)
        m.redis_duration.labels("save").observe(stats.save_s)
        for result, count in out.results.items():
            m.events.labels(result).inc(count)
            self.summary.results[result] = self.summary.results.get(result, 0) + count
        for reason, count in out.dlq_reasons.items():
            m.dlq.labels(reason).inc(count)
        for change in out.changes:
            m.tier_changes.labels(change.previous_tier or "none", change.tier).inc()
        if out.max_event_ms is not None:
            m.last_event_time.set(out.max_event_ms / 1000)
        m.last_batch_time.set(time.time())
        m.timers_fired.inc(out.timers_fired)
        self.health_model.observe(out.resolved, out.changes)
        models = self.checkpoint.step.engine.models
        self._record_model(models.model)
        lag = self.source.lag()
        if lag is not None:
            m.lag.set(lag)
        self.summary.batches += 1
        self.summary.records += n
        self.summary.tier_changes += len(out.changes)

    def _record_model(self, model: GlobalModel) -> None:
        m, h = self.metrics, self.health_model
        m.model_version.set(model.version)
        m.model_samples.set(model.samples_seen)
        m.model_labels.set(model.labels_seen)
        if h.auc is not None:
            m.propensity_auc.set(h.auc)
        if h.log_loss is not None:
            m.propensity_log_loss.set(h.log_loss)
        m.drift_detections.set(h.drifts)
        m.tier_flaps.set(h.flaps)

    def _close(self) -> None:
        self._ready = False
        for close in (self.source.close, self.publisher.close, self.store.close):
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
        model = GlobalModel.from_json(orjson.loads(raw)) if raw else None
        own = None if settings.freeze_model else store.get_contribution(settings.instance)
        contribution = orjson.loads(own) if own else None
    return load_engine(
        settings.tiers_path,
        model=model,
        contribution=contribution,
        frozen=settings.freeze_model or bool(settings.model_file),
    )
