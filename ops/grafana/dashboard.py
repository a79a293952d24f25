"""The tierstream Grafana dashboard, as code.

``make dashboard`` (``python ops/grafana/dashboard.py``) writes
``ops/grafana/dashboards/tierstream.json``, which Grafana loads through
``ops/grafana/provisioning/`` (docker-compose.yml mounts both). Edit this file, never the
JSON: ``tests/unit/test_dashboard.py`` fails when the committed JSON is not what this
file writes, when a ``tierstream_*`` metric of ``consumer.service.metrics.Metrics`` is in
no panel, and when a panel does not take its data source from the ``datasource`` variable.

Plain Python rather than the ``grafana-foundation-sdk`` package, for three reasons:

- the JSON in the repository is exactly what is written here, key for key, so a review
  of a dashboard change reads like a review of the code; the SDK fills in its own
  defaults, which change with its releases (they follow Grafana's), so bumping it would
  rewrite the file with no change of ours;
- about thirty panels of three kinds (stat, time series, table) need a few small
  builders, not a library, and the panels' PromQL is the part worth reading;
- it needs nothing but the standard library, so ``make dashboard`` and the unit test run
  anywhere the project's Python does, with no new dependency to pin.

Every panel reads the data source from the ``datasource`` template variable (its default
is the uid of the provisioned Prometheus, ``prometheus``) and filters on the
``instance`` variable. Counters are shown as rates over Grafana's ``$__rate_interval``,
which follows the scrape interval and the zoom.

>>> board = build()
>>> [p["title"] for p in board["panels"] if p["type"] == "row"]
['Throughput, errors, latency, lag', 'Tiers', 'Model health']
>>> [v["name"] for v in board["templating"]["list"]]
['datasource', 'instance']
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Json = dict[str, Any]

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "tierstream.json"

#: The provisioned Prometheus (ops/grafana/provisioning/datasources/prometheus.yml).
DATASOURCE_UID = "prometheus"
#: What every panel and the instance variable query: the variable, not a fixed uid, so
#: the same JSON works in a Grafana whose Prometheus has another uid.
DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
#: The scrape job (ops/prometheus/prometheus.yml, and the ServiceMonitor in ops/k8s/).
JOB = "tierstream"
RATE = "$__rate_interval"

GRID_WIDTH = 24


def series(name: str, *matchers: str) -> str:
    """``name`` restricted to the job and the instances picked in the dashboard.

    >>> series("tierstream_events_total", 'result="dlq"')
    'tierstream_events_total{job="tierstream", instance=~"$instance", result="dlq"}'
    """
    selector = ", ".join((f'job="{JOB}"', 'instance=~"$instance"', *matchers))
    return f"{name}{{{selector}}}"


def rate(name: str, *matchers: str, window: str = RATE) -> str:
    """Per-second rate of a counter (or a histogram's buckets, sum, count)."""
    return f"rate({series(name, *matchers)}[{window}])"


def quantile(q: float, histogram: str, *by: str) -> str:
    """The ``q`` quantile of a histogram over every instance picked, per ``by`` labels."""
    labels = ", ".join(("le", *by))
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(histogram + '_bucket')}))"


def target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Json:
    """One query of a panel; its refId is given when the panel is made."""
    out: Json = {"datasource": DATASOURCE, "expr": expr}
    if legend:
        out["legendFormat"] = legend
    if instant:
        out["instant"] = True
        out["range"] = False
    else:
        out["range"] = True
    if table:
        out["format"] = "table"
    return out


def _panel(kind: str, title: str, description: str, targets: Sequence[Json]) -> Json:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
    }


def timeseries(
    title: str,
    description: str,
    *targets: Json,
    unit: str = "short",
    min_value: float | None = 0,
    max_value: float | None = None,
    bars: bool = False,
) -> Json:
    """A graph over time, one line (or bars) per series."""
    defaults: Json = {
        "unit": unit,
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
        },
    }
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    return {
        **_panel("timeseries", title, description, targets),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str = "short",
    steps: Sequence[tuple[str, float | None]] = (("green", None),),
) -> Json:
    """One number, the latest value, coloured by ``steps`` ((colour, from value), ...)."""
    return {
        **_panel("stat", title, description, [target(expr, instant=True)]),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": colour, "value": value} for colour, value in steps],
                },
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        },
    }


def table(title: str, description: str, expr: str) -> Json:
    """The latest series of ``expr`` as rows, one column per label (the value hidden)."""
    return {
        **_panel("table", title, description, [target(expr, instant=True, table=True)]),
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True},
        "transformations": [
            {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}
        ],
    }


def bargauge(title: str, description: str, expr: str, legend: str) -> Json:
    """Horizontal bars, one per series, of the value of ``expr`` now."""
    return {
        **_panel("bargauge", title, description, [target(expr, legend, instant=True)]),
        "fieldConfig": {"defaults": {"unit": "short", "min": 0}, "overrides": []},
        "options": {
            "orientation": "horizontal",
            "displayMode": "basic",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
        },
    }


class Layout:
    """Places panels left to right in rows of the 24-column grid, and numbers them."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self._x = 0
        self._y = 0
        self._row_height = 0

    def row(self, title: str) -> None:
        """A row header across the grid; the panels after it belong to it."""
        self._newline()
        self._add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        self._newline()

    def add(self, panel: Json, width: int, height: int = 8) -> None:
        """``panel`` after the previous one, on a new line if it does not fit."""
        if self._x + width > GRID_WIDTH:
            self._newline()
        self._add(panel, width, height)

    def _add(self, panel: Json, width: int, height: int) -> None:
        grid = {"h": height, "w": width, "x": self._x, "y": self._y}
        self.panels.append({"id": len(self.panels) + 1, "gridPos": grid, **panel})
        self._x += width
        self._row_height = max(self._row_height, height)

    def _newline(self) -> None:
        self._y += self._row_height
        self._x = self._row_height = 0


def throughput_row(layout: Layout) -> None:
    """How much is read, what fails, how long it takes, how far behind it is."""
    layout.row("Throughput, errors, latency, lag")
    lag_per_partition = f"max by (topic, partition) ({series('tierstream_consumer_lag_records')})"
    for panel in (
        stat(
            "Targets up",
            "Instances Prometheus scrapes successfully.",
            f"sum({series('up')})",
            steps=(("red", None), ("green", 1)),
        ),
        stat(
            "Events/s",
            "Input records per second, every result.",
            f"sum({rate('tierstream_events_total')})",
            unit="ops",
        ),
        stat(
            "Records behind",
            "Records of the input topic not read yet, each partition counted once.",
            f"sum({lag_per_partition})",
            steps=(("green", None), ("orange", 10_000), ("red", 100_000)),
        ),
        stat(
            "Event-time lag",
            "How far behind the events the tiers are: the worst partition "
            "(alert TierstreamEventTimeLagHigh above 5 minutes).",
            f"max({series('tierstream_event_time_lag_seconds')})",
            unit="s",
            steps=(("green", None), ("orange", 60), ("red", 300)),
        ),
        stat(
            "Since the last batch",
            "Wall time since the most recent committed batch of any instance.",
            f"time() - max({series('tierstream_last_batch_timestamp_seconds')})",
            unit="s",
            steps=(("green", None), ("orange", 60), ("red", 600)),
        ),
        stat(
            "Newest event applied",
            "Event time of the newest event any instance has applied.",
            f"max({series('tierstream_last_event_timestamp_seconds')}) * 1000",
            unit="dateTimeFromNow",
        ),
    ):
        layout.add(panel, 4, 4)
    for panel in (
        timeseries(
            "Events/s by result",
            "applied, duplicate (same event id again), skipped (applied before a "
            "restart), dlq (malformed: dead-lettered).",
            target(f"sum by (result) ({rate('tierstream_events_total')})", "{{result}}"),
            unit="ops",
        ),
        timeseries(
            "DLQ records/s by reason",
            "Records sent to the dead-letter topic, by why they could not be read "
            "(alerts TierstreamDLQActivity, TierstreamDLQRatioHigh).",
            target(f"sum by (reason) ({rate('tierstream_dlq_records_total')})", "{{reason}}"),
            unit="ops",
        ),
        timeseries(
            "Batch errors/s by kind",
            "Batches that failed and were read again, by exception "
            "(alert TierstreamBatchErrorRatioHigh; runbook: TierstreamNoProgress).",
            target(f"sum by (kind) ({rate('tierstream_batch_errors_total')})", "{{kind}}"),
            unit="ops",
        ),
        timeseries(
            "Batch duration",
            "Wall time of one batch through the commit protocol (load, apply, save, "
            "publish, commit).",
            target(quantile(0.99, "tierstream_batch_duration_seconds"), "p99"),
            target(quantile(0.5, "tierstream_batch_duration_seconds"), "p50"),
            unit="s",
        ),
        timeseries(
            "Records per batch",
            "How full the batches are: small batches at a high rate mean the service "
            "keeps up; full ones (TIERSTREAM_MAX_POLL_RECORDS) that it is catching up.",
            target(quantile(0.99, "tierstream_batch_records"), "p99"),
            target(quantile(0.5, "tierstream_batch_records"), "p50"),
        ),
        timeseries(
            "Redis round trip p99 by operation",
            "State store round trips: load (before a batch) and save (the batch's "
            "pipelined write).",
            target(
                quantile(0.99, "tierstream_redis_duration_seconds", "operation"), "{{operation}}"
            ),
            unit="s",
        ),
        timeseries(
            "Lag per partition (records)",
            "Records of each input partition not read yet, reported by its owner "
            "(alert TierstreamLagGrowing).",
            target(lag_per_partition, "{{topic}}/{{partition}}"),
        ),
        timeseries(
            "Event-time lag per partition",
            "Wall clock minus the newest event time applied on each partition. A "
            "partition that receives nothing ages with the clock while its owner works "
            "on others (alert TierstreamEventTimeLagHigh).",
            target(
                f"max by (topic, partition) ({series('tierstream_event_time_lag_seconds')})",
                "{{topic}}/{{partition}}",
            ),
            unit="s",
        ),
        timeseries(
            "Assigned partitions per instance",
            "Input partitions each instance owns; steps mean rebalances.",
            target(
                f"sum by (instance) ({series('tierstream_assigned_partitions')})", "{{instance}}"
            ),
        ),
        timeseries(
            "Outbox re-published/s",
            "Outputs published again from the outbox after a restart or a failed "
            "batch: non-zero around restarts and rebalances only.",
            target(
                f"sum by (instance) ({rate('tierstream_outbox_republished_total')})", "{{instance}}"
            ),
            unit="ops",
        ),
        timeseries(
            "Timers fired/s",
            "User timers fired: re-scores of silent users, label deadlines past a year of "
            "silence, expiries.",
            target(f"sum by (instance) ({rate('tierstream_timers_fired_total')})", "{{instance}}"),
            unit="ops",
        ),
        table(
            "Builds running",
            "Which build each instance runs, with the library versions that decide its behaviour.",
            "max by (instance, version, python, kafka_python, river, redis_py) "
            f"({series('tierstream_build_info')})",
        ),
    ):
        layout.add(panel, 12)


def population(*by: str) -> str:
    """Users per ``by`` labels, each partition counted once: its owner reports it, and
    while a partition changes hands two instances may for a scrape or two (docs/metrics.md).

    >>> print(population("tier"))
    sum by (tier) (max by (topic, partition, tier) (tierstream_tier_population{...}))
    """
    once = f"max by (topic, partition, tier) ({series('tierstream_tier_population')})"
    return f"sum by ({', '.join(by)}) ({once})" if by else f"sum({once})"


def tiers_row(layout: Layout) -> None:
    """How many users each tier holds, where they move, and what treating a tier does."""
    layout.row("Tiers")
    layout.add(
        timeseries(
            "Users per tier",
            "Users with a state, by tier: counted by each partition's owner in the "
            "transaction that writes the states, so exact (forgotten and expired users "
            "leave their tier when their state is deleted).",
            target(population("tier"), "{{tier}}"),
        ),
        12,
    )
    layout.add(
        bargauge("Users per tier now", "Tier populations.", population("tier"), "{{tier}}"),
        6,
    )
    forgotten = rate("tierstream_events_total", 'result="forgotten"')
    layout.add(
        timeseries(
            "Users ended/s",
            "Users whose state was deleted: silent past TIERSTREAM_STATE_TTL_DAYS (event "
            "time), or forgotten (tierstream forget).",
            target(f"sum({rate('tierstream_users_expired_total')})", "expired"),
            target(f"sum({forgotten})", "forgotten"),
            unit="ops",
        ),
        6,
    )
    changes = "tierstream_tier_changes_total"
    layout.add(
        timeseries(
            "Tier transitions/s by from → to",
            "Tier changes published per second; from none: a user's first tier; to "
            "erased: a forget request.",
            target(f"sum by (from_tier, to_tier) ({rate(changes)})", "{{from_tier}} → {{to_tier}}"),
            unit="ops",
        ),
        12,
    )
    layout.add(
        bargauge(
            "Tier transitions in the time range",
            "Tier changes over the dashboard's time range, by previous and new tier.",
            f"sum by (from_tier, to_tier) (increase({series(changes)}[$__range]))",
            "{{from_tier}} → {{to_tier}}",
        ),
        12,
    )
    conversions = "tierstream_tier_conversions_total"
    bought = rate(conversions, 'outcome="converted"', window="1d")
    converted = f"sum by (tier, group) ({bought})"
    resolved = f"sum by (tier, group) ({rate(conversions, window='1d')})"
    layout.add(
        timeseries(
            "Conversion per tier: treated vs control",
            "Share of propensity snapshots followed by a purchase within the label horizon, "
            "by the tier the user was in at the snapshot, for treated users and the control "
            "group that campaigns hold out (1-day window): the gap is the uplift of a "
            "tier's treatment.",
            target(f"{converted} / {resolved}", "{{tier}} ({{group}})"),
            unit="percentunit",
            max_value=1,
        ),
        24,
    )


def model_row(layout: Layout) -> None:
    """Is the shared model learning, and is it any good (docs/models.md, "Health")."""
    layout.row("Model health")
    version = series("tierstream_model_version")
    for panel in (
        timeseries(
            "Model version (min / max over instances)",
            "The global model version the instances score with: equal once every "
            "instance has read the newest (alert TierstreamModelNotAdvancing).",
            target(f"min({version})", "min"),
            target(f"max({version})", "max"),
            min_value=None,
        ),
        timeseries(
            "Model version age",
            "Seconds since each instance first scored with its current version (starts "
            "again at a restart).",
            target(
                f"max by (instance) ({series('tierstream_model_version_age_seconds')})",
                "{{instance}}",
            ),
            unit="s",
        ),
        timeseries(
            "Samples and labels in the model",
            "Learning samples and propensity labels folded into the global model.",
            target(f"max({series('tierstream_model_samples')})", "samples"),
            target(f"max({series('tierstream_model_labels')})", "labels"),
        ),
        timeseries(
            "Learning rebased and dropped per hour",
            "Batches whose learning met a model version another instance wrote "
            "meanwhile and was learnt again on it (rebased), and batches whose learning "
            "was dropped after five such attempts (should stay 0; alert "
            "TierstreamModelLearningDropped).",
            target(
                f"sum(increase({series('tierstream_model_learning_rebases_total')}[1h]))",
                "rebased",
            ),
            target(
                f"sum(increase({series('tierstream_model_learning_dropped_total')}[1h]))",
                "dropped",
            ),
        ),
        timeseries(
            "Segments and silhouette",
            "How many segments the model has (k, chosen by the silhouette every few "
            "versions) and their silhouette on the model's sample of users.",
            target(f"max({series('tierstream_model_segments')})", "k"),
            target(f"max({series('tierstream_model_silhouette')})", "silhouette"),
            min_value=None,
        ),
        timeseries(
            "Prequential AUC",
            "Rolling ROC AUC of the propensity model, each label scored before the "
            "model learned from it; 0 until the instance has seen a label "
            "(alert TierstreamModelAUCDrop).",
            target(f"max by (instance) ({series('tierstream_propensity_auc')})", "{{instance}}"),
            max_value=1,
        ),
        timeseries(
            "Prequential log-loss",
            "Rolling log-loss of the propensity model (lower is better).",
            target(
                f"max by (instance) ({series('tierstream_propensity_log_loss')})", "{{instance}}"
            ),
        ),
        timeseries(
            "Drift detections per hour",
            "ADWIN drift detections on the propensity log-loss (alert TierstreamModelDrift).",
            target(
                "sum by (instance) "
                f"(increase({series('tierstream_model_drift_detections_total')}[1h]))",
                "{{instance}}",
            ),
        ),
        timeseries(
            "Tier flap ratio",
            "Share of recent tier changes that undo the user's previous change "
            "(A → B → A) (alert TierstreamTierFlapping).",
            target(f"max by (instance) ({series('tierstream_tier_flap_ratio')})", "{{instance}}"),
            unit="percentunit",
            max_value=1,
        ),
    ):
        layout.add(panel, 8)


def variables() -> list[Json]:
    """The data source (any Prometheus; default the provisioned one) and the instances."""
    instances = f'label_values(up{{job="{JOB}"}}, instance)'
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "regex": "",
            "current": {"selected": False, "text": "Prometheus", "value": DATASOURCE_UID},
            "options": [],
            "refresh": 1,
            "includeAll": False,
            "multi": False,
            "hide": 0,
        },
        {
            "name": "instance",
            "label": "instance",
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": instances, "refId": "instance"},
            "definition": instances,
            "includeAll": True,
            "multi": True,
            # Not the default (a list of every value): ".*" keeps the queries short and
            # picks up an instance that appears after the page was loaded.
            "allValue": ".*",
            "refresh": 2,
            "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "hide": 0,
        },
    ]


def build() -> Json:
    """The whole dashboard."""
    layout = Layout()
    throughput_row(layout)
    tiers_row(layout)
    model_row(layout)
    return {
        "uid": "tierstream-overview",
        "title": "tierstream overview",
        "description": "Generated by ops/grafana/dashboard.py (make dashboard): edit that file.",
        "tags": ["tierstream"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": variables()},
        "panels": layout.panels,
    }


def render() -> str:
    """The dashboard as the committed file holds it."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str]) -> int:
    """Write the dashboard to OUTPUT, or to the path given."""
    path = Path(argv[0]) if argv else OUTPUT
    path.write_text(render(), encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
