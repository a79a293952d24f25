"""The metrics registry and its endpoint (issue 10): per-partition lag series that leave
with their partition, the build and process metrics, a counter for drift, OpenMetrics
when the scraper asks for it."""

from __future__ import annotations

import urllib.request

from prometheus_client import generate_latest

from consumer.service.metrics import HealthServer, Metrics


def _text(m: Metrics) -> str:
    return generate_latest(m.registry).decode()


def test_per_partition_series_leave_with_their_partition() -> None:
    m = Metrics()
    for p in (0, 1):
        m.lag.labels("events", str(p)).set(10 + p)
        m.event_lag.labels("events", str(p)).set(2.5)
        m.set_population(("events", p), {"vip": 3 + p, "casual": 0})
    m.set_population(("events", 1), {"engaged": 1})  # a tier seen later leaves too
    m.forget_partitions([("events", 1), ("events", 7)])  # 7 was never reported: no error
    text = _text(m)
    assert 'tierstream_consumer_lag_records{partition="0",topic="events"} 10.0' in text
    assert 'partition="1"' not in text
    assert 'tierstream_event_time_lag_seconds{partition="0",topic="events"} 2.5' in text
    assert 'tierstream_tier_population{partition="0",tier="vip",topic="events"} 3.0' in text


def test_build_process_and_python_metrics_are_exported() -> None:
    text = _text(Metrics())
    build = [line for line in text.splitlines() if line.startswith("tierstream_build_info{")]
    assert len(build) == 1 and build[0].endswith(" 1.0")
    for label in ("version=", "python=", "kafka_python=", "river=", "redis_py="):
        assert label in build[0]
    assert "process_resident_memory_bytes" in text
    assert "python_info" in text and "python_gc_objects_collected_total" in text


def test_drift_detections_is_a_counter() -> None:
    m = Metrics()
    m.drift_detections.inc(2)
    text = _text(m)
    assert "# TYPE tierstream_model_drift_detections_total counter" in text
    assert "tierstream_model_drift_detections_total 2.0" in text


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it() -> None:
    server = HealthServer(Metrics(), host="127.0.0.1", port=0, is_ready=lambda: True)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        asks = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(asks, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert resp.read().decode().rstrip().endswith("# EOF")
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
    finally:
        server.stop()


def test_docs_metrics_lists_every_metric_with_its_type_and_labels() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from tests.integration.support import REPO

    doc = (REPO / "docs" / "metrics.md").read_text()
    m = Metrics()
    for obj in vars(m).values():
        if isinstance(obj, MetricWrapperBase):
            name = obj._name + ("_total" if obj._type == "counter" else "")
            labels = ", ".join(f"`{label}`" for label in obj._labelnames) or "—"
            assert f"| `{name}` | {obj._type} | {labels} |" in doc, name
