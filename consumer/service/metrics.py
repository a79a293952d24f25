"""Prometheus metrics and the /healthz, /readyz endpoints.

Names follow Prometheus conventions: prefix ``tierstream_``, base units, ``_total``
counters, and no user ids in labels (tiers and reasons are small closed sets).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector

Partition = tuple[str, int]

#: Batches take milliseconds (small) to seconds (a large catch-up batch, a slow Redis).
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: One Redis round trip on loopback is ~0.1 ms; a pipelined batch write up to ~100 ms.
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)


class Metrics:
    """Every metric of the service, in its own registry (tests may create several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "tierstream_events",
            "Input records by result: applied, duplicate, skipped (applied before a restart), dlq.",
            ["result"],
            registry=r,
        )
        self.dlq = Counter(
            "tierstream_dlq_records", "Records sent to the DLQ, by reason.", ["reason"], registry=r
        )
        self.tier_changes = Counter(
            "tierstream_tier_changes",
            "Tier changes published, by previous and new tier.",
            ["from_tier", "to_tier"],
            registry=r,
        )
        self.outputs_republished = Counter(
            "tierstream_outbox_republished",
            "Outputs published again from the outbox after a restart or failure.",
            registry=r,
        )
        self.batch_errors = Counter(
            "tierstream_batch_errors",
            "Batches that failed and were retried, by kind.",
            ["kind"],
            registry=r,
        )
        self.batch_duration = Histogram(
            "tierstream_batch_duration_seconds",
            "Wall time of one batch through the commit protocol.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_records = Histogram(
            "tierstream_batch_records",
            "Records per batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.redis_duration = Histogram(
            "tierstream_redis_duration_seconds",
            "State store round trips, by operation.",
            ["operation"],
            buckets=REDIS_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "tierstream_consumer_lag_records",
            "Records of an owned input partition not yet read (removed when it is revoked).",
            ["topic", "partition"],
            registry=r,
        )
        self.event_lag = Gauge(
            "tierstream_event_time_lag_seconds",
            "Wall clock minus the newest event time applied on an owned input partition "
            "(removed when it is revoked): how far behind the events the tiers are.",
            ["topic", "partition"],
            registry=r,
        )
        self.last_event_time = Gauge(
            "tierstream_last_event_timestamp_seconds",
            "Event time of the newest applied event.",
            registry=r,
        )
        self.last_batch_time = Gauge(
            "tierstream_last_batch_timestamp_seconds",
            "Wall time the last batch was committed.",
            registry=r,
        )
        self.timers_fired = Counter(
            "tierstream_timers_fired",
            "User timers fired (inactivity re-scores, label deadlines past a year of silence, "
            "expiries).",
            registry=r,
        )
        self.population = Gauge(
            "tierstream_tier_population",
            "Users with a state in an owned input partition, by tier (removed when the "
            "partition is revoked): counted in the transaction that writes the states, "
            "so exact; the deployment's is the sum over partitions.",
            ["topic", "partition", "tier"],
            registry=r,
        )
        self.users_expired = Counter(
            "tierstream_users_expired",
            "Users whose state was deleted after TIERSTREAM_STATE_TTL_DAYS of silence "
            "(event time).",
            registry=r,
        )
        self.model_version = Gauge(
            "tierstream_model_version",
            "Global model version this instance scores with.",
            registry=r,
        )
        self.model_samples = Gauge(
            "tierstream_model_samples", "Learning samples folded into the global model.", registry=r
        )
        self.model_labels = Gauge(
            "tierstream_model_labels", "Propensity labels folded into the global model.", registry=r
        )
        self.learning_rebases = Counter(
            "tierstream_model_learning_rebases",
            "Batches whose learning was learnt again on a model version another instance "
            "wrote while the batch ran (one per attempt).",
            registry=r,
        )
        self.learning_dropped = Counter(
            "tierstream_model_learning_dropped",
            "Batches whose learning was dropped: the model changed at every attempt to save it.",
            registry=r,
        )
        self.segments = Gauge(
            "tierstream_model_segments",
            "Segments (k) of the global model, chosen by the silhouette.",
            registry=r,
        )
        self.segment_silhouette = Gauge(
            "tierstream_model_silhouette",
            "Mean silhouette of the global model's segments on its sample of users "
            "(-1..1), as of the last evaluation of k.",
            registry=r,
        )
        self.propensity_auc = Gauge(
            "tierstream_propensity_auc",
            "Prequential (test-then-train) rolling ROC AUC of the propensity model.",
            registry=r,
        )
        self.propensity_log_loss = Gauge(
            "tierstream_propensity_log_loss",
            "Prequential rolling log-loss of the propensity model.",
            registry=r,
        )
        self.drift_detections = Counter(
            "tierstream_model_drift_detections",
            "ADWIN drift detections on the propensity log-loss.",
            registry=r,
        )
        self.model_age = Gauge(
            "tierstream_model_version_age_seconds",
            "Seconds since this instance first scored with its current model version.",
            registry=r,
        )
        self.tier_flaps = Gauge(
            "tierstream_tier_flap_ratio",
            "Share of recent tier changes that undo the user's previous change (A->B->A).",
            registry=r,
        )
        self.conversions = Counter(
            "tierstream_tier_conversions",
            "Propensity labels resolved, by the user's tier at the snapshot, control group "
            "or treated, and whether they bought within the horizon: conversion per tier, "
            "and the uplift of treating it (treated minus control).",
            ["tier", "group", "outcome"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "tierstream_assigned_partitions", "Input partitions this instance owns.", registry=r
        )
        self.build_info = Gauge(
            "tierstream_build_info",
            "Always 1; the labels say which build runs.",
            ["version", "python", "kafka_python", "river", "redis_py"],
            registry=r,
        )
        self.build_info.labels(**_versions()).set(1)
        #: The tiers reported per partition (their series are removed with it).
        self._tiers: dict[Partition, set[str]] = {}
        if registry is None:  # the process's own: CPU, memory, file descriptors, GC
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    def set_population(self, partition: Partition, population: Mapping[str, int]) -> None:
        """Report ``partition``'s users per tier."""
        topic, p = partition[0], str(partition[1])
        for tier, users in population.items():
            self.population.labels(topic, p, tier).set(users)
        self._tiers.setdefault(partition, set()).update(population)

    def forget_partitions(self, partitions: Iterable[Partition]) -> None:
        """Drop the per-partition series of ``partitions`` (revoked: another instance
        reports them now, and a stale series would add up twice or fire alerts)."""
        for tp in partitions:
            topic, partition = tp[0], str(tp[1])
            for gauge in (self.lag, self.event_lag):
                with contextlib.suppress(KeyError):  # never reported here
                    gauge.remove(topic, partition)
            for tier in self._tiers.pop(tp, ()):
                with contextlib.suppress(KeyError):
                    self.population.remove(topic, partition, tier)


def _versions() -> dict[str, str]:
    """The versions of this build and of the libraries that decide its behaviour."""
    import platform
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {
        "version": version("tierstream"),
        "python": platform.python_version(),
        "kafka_python": version("kafka-python"),
        "river": version("river"),
        "redis_py": version("redis"),
    }


class HealthServer:
    """Serves /metrics, /healthz (the loop is alive) and /readyz (ready to process).

    /healthz never depends on Kafka or Redis: a broker outage must not make the
    orchestrator restart every instance at once.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str,
        port: int,
        is_ready: Callable[[], bool],
        stall_after_s: float = 120.0,
    ) -> None:
        self.metrics = metrics
        self.is_ready = is_ready
        self.stall_after_s = stall_after_s
        self.heartbeat = time.monotonic()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":  # OpenMetrics if the scraper asks for it
                    encode, ctype = choose_encoder(self.headers.get("Accept", ""))
                    self._send(200, encode(server.metrics.registry), ctype)
                elif path == "/healthz":
                    alive = time.monotonic() - server.heartbeat < server.stall_after_s
                    self._send(200 if alive else 503, b"ok\n" if alive else b"stalled\n")
                elif path == "/readyz":
                    ready = server.is_ready()
                    self._send(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def beat(self) -> None:
        """Called by the loop on every iteration."""
        self.heartbeat = time.monotonic()

    def stop(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()
