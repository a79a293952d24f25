"""One scenario run from start to verdict: topics, a paced stream, a supervised cluster,
faults in between (the tests' business), then the end state collected and checked
against the clean run; and the figures the full suite writes to ``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from consumer.service.model_files import read_model
from consumer.service.records import InputRecord
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from tests.chaos import invariants as inv
from tests.chaos.cluster import Cluster
from tests.chaos.harness import (
    REPO,
    Endpoints,
    Names,
    Producer,
    Timeline,
    committed_offsets,
    create_topic,
    end_offsets,
    read_topic,
)

#: Where each full-suite scenario leaves its figures (one JSON file each) for
#: ``docs/reliability.md``; kept across runs, so one scenario re-run updates its table only.
FIGURES_DIR = REPO / ".stack-chaos" / "figures"
RELIABILITY_DOC = REPO / "docs" / "reliability.md"


@dataclass
class Outcome:
    """What the deployment holds at the end of a run."""

    caught_up: bool
    end: dict[int, int]
    stops: dict[str, int | None]
    inputs: list[InputRecord] = field(default_factory=list)
    states: dict[str, bytes] = field(default_factory=dict)
    changes: list[InputRecord] = field(default_factory=list)
    dead: list[InputRecord] = field(default_factory=list)
    applied: dict[int, int] = field(default_factory=dict)
    outbox: dict[int, int] = field(default_factory=dict)
    committed: dict[int, int | None] = field(default_factory=dict)
    stall: str = ""


class Run:
    """A scenario's deployment: unique names, the input topic, a :class:`Cluster`."""

    def __init__(
        self,
        endpoints: Endpoints,
        workdir: Path,
        *,
        partitions: int = 4,
        model_file: Path | None = None,
        max_poll_records: int = 500,
        env: dict[str, str] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.partitions = partitions
        self.model_file = model_file
        self.names = Names()
        self.timeline = Timeline()
        self.started = time.monotonic()
        create_topic(endpoints.kafka, self.names.input, partitions)
        extra = {"TIERSTREAM_MAX_POLL_RECORDS": str(max_poll_records), **(env or {})}
        if model_file is not None:
            extra["TIERSTREAM_MODEL_FILE"] = str(model_file)
        self.cluster = Cluster(
            self.names,
            endpoints,
            workdir,
            partitions=partitions,
            env=self.names.env(endpoints, **extra),
            timeline=self.timeline,
        )
        self.producer: Producer | None = None
        #: Next offset per input partition, over every stream produced so far.
        self.acked_end: dict[int, int] = {}
        #: How long the last stream takes to produce at its rate.
        self.producing_s = 0.0
        self.verdict = inv.Verdict()

    def produce(
        self, records: Sequence[tuple[bytes | None, bytes]], rate: float | None
    ) -> Producer:
        """Start producing ``records`` at ``rate`` per second in the background."""
        self.producer = Producer(
            self.endpoints.kafka,
            self.names.input,
            records,
            rate=rate,
            timeline=self.timeline,
            acked_end=self.acked_end,
        ).start()
        self.cluster.producer = self.producer
        self.producing_s = len(records) / rate if rate else 0.0
        self.timeline.note(f"producing {len(records)} records at {rate or 'full'}/s")
        return self.producer

    def feed(self, records: Sequence[tuple[bytes | None, bytes]], timeout: float) -> bool:
        """Produce ``records`` at once and wait until they are applied and published
        (False on timeout)."""
        self.produce(records, None).join(timeout)
        end = {p: self.acked_end.get(p, 0) for p in range(self.partitions)}
        return self.cluster.wait_for(
            "the records to be applied", lambda: self.cluster.caught_up(end), timeout
        )

    def finish(self, catch_up_s: float, before_stop: Callable[[], None] | None = None) -> Outcome:
        """Wait for the stream to be produced, then at most ``catch_up_s`` for it to be
        consumed (longer is a stall), call ``before_stop``, stop every instance with
        SIGTERM, and collect the end state."""
        assert self.producer is not None
        self.producer.join(self.producing_s + 120)
        # The input's real end: the service appends records of its own to it (forwarded
        # forget requests), possibly after the producer's last one in a partition.
        appended = end_offsets(self.endpoints.kafka, self.names.input)
        end = {p: max(self.acked_end.get(p, 0), appended.get(p, 0)) for p in range(self.partitions)}
        caught = self.cluster.wait_caught_up(end, catch_up_s)
        stall = "" if caught else self.cluster.stall_report(end)
        if before_stop is not None:
            before_stop()
        stops = self.cluster.stop_all()
        out = Outcome(caught, end, stops, stall=stall)
        kafka = self.endpoints.kafka
        out.inputs = read_topic(kafka, self.names.input)
        out.states = self.cluster.redis.user_states()
        out.changes = read_topic(kafka, self.names.output)
        out.dead = read_topic(kafka, self.names.dlq)
        out.applied, out.outbox = self.cluster.redis.progress()
        out.committed = committed_offsets(kafka, self.names.group, self.names.input)
        return out

    def reference(
        self, records: Sequence[InputRecord], model_file: Path | None = None
    ) -> inv.Reference:
        """The clean run of ``records`` scored with the frozen model (default: the one every
        instance scores with)."""
        path = model_file or self.model_file
        assert path is not None, "a clean run to compare with needs a frozen model"
        engine = load_engine(DEFAULT_TIERS_FILE, model=read_model(path), frozen=True)
        return inv.reference(
            records, engine, output_topic=self.names.output, dlq_topic=self.names.dlq
        )

    def check_end(
        self,
        out: Outcome,
        ref: inv.Reference | None,
        *,
        frozen: bool = True,
        strict_copies: bool = True,
    ) -> dict[str, Any]:
        """The invariants every scenario shares; returns figures (duplicates)."""
        v = self.verdict
        v.check(
            "caught up: every record applied, published and committed in time",
            [] if out.caught_up else ["stalled:\n" + out.stall],
        )
        inv.no_crash(v, self.cluster.crashes, out.stops)
        figures: dict[str, Any] = {}
        if not out.caught_up:
            return figures
        inv.offsets_done(v, out.end, out.applied, out.outbox, out.committed)
        if strict_copies:
            figures["duplicate changes"] = inv.copies_identical(
                v, out.changes, key="event_id", what="tier changes"
            )
        else:
            figures["duplicate changes"] = inv.copies_identical(
                v,
                [InputRecord(*r[:5], _without_emitted_at(r.value)) for r in out.changes],
                key="event_id",
                what="tier changes (but emitted_at)",
            )
        figures["duplicate dead letters"] = inv.copies_identical(
            v, out.dead, key="source", what="dead letters"
        )
        inv.seq_gap_free(v, out.changes, out.states)
        inv.first_occurrences_in_order(v, out.changes)
        inv.populations_exact(v, *self.cluster.redis.populations())
        if ref is not None:
            if frozen:
                inv.states_equal(v, out.states, ref.store.users)
                inv.changes_complete(v, out.changes, ref.changes)
            else:
                inv.features_equal(v, out.states, ref.store.users)
            want = {
                (d["source_partition"], d["source_offset"]): d["reason"]
                for d in (json.loads(x) for x in ref.dead)
            }
            inv.dead_letters(v, out.dead, want)
        return figures

    def last_rows(self, figures: dict[str, Any] | None = None) -> dict[str, Any]:
        """The figures every scenario ends its table with."""
        rows: dict[str, Any] = {
            "crashes": len(self.cluster.crashes),
            "lag peak, records": self.cluster.lag_peak(),
        }
        if figures is not None:
            rows["duplicate tier changes"] = figures.get("duplicate changes", "n/a")
        rows["runtime, s"] = round(time.monotonic() - self.started, 1)
        return rows

    def assert_ok(self, scenario: str) -> None:
        """Fail with every violated invariant, the timeline and where the logs are."""
        if not self.verdict.violations:
            return
        logs = ", ".join(str(i.log_path) for i in self.cluster.instances.values())
        logs += f"; whole timeline: {self.cluster.workdir / 'timeline.txt'}"
        pytest.fail(
            f"{scenario}: {len(self.verdict.violations)} invariant(s) violated\n"
            f"{self.verdict.render()}\n\ntimeline:\n{self.timeline.render()}\n\nlogs: {logs}",
            pytrace=False,
        )

    def close(self) -> None:
        """Stop everything, and delete the scenario's Redis keys (the stack may be the
        developer's; the topics stay, as the integration tests' do)."""
        self.cluster.close()
        (self.cluster.workdir / "timeline.txt").write_text(self.timeline.render(last=10**6) + "\n")
        with contextlib.suppress(redis.RedisError), self.cluster.redis.client() as r:
            keys = list(r.scan_iter(match=f"{self.names.prefix}:*", count=2000))
            for i in range(0, len(keys), 2000):
                r.delete(*keys[i : i + 2000])


def fmt_seconds(seconds: float | None) -> str:
    """A figure in seconds, or "never"."""
    return "never" if seconds is None else f"{seconds:.1f}"


def _without_emitted_at(value: bytes | None) -> bytes:
    data = json.loads(value or b"{}")
    data.pop("emitted_at", None)
    return json.dumps(data, sort_keys=True).encode()


# --------------------------------------------------------------------------- figures ---


def conclude(
    run: Run,
    scenario: str,
    rows: dict[str, Any] | None = None,
    *,
    key: str = "",
    title: str = "",
    command: str = "",
) -> None:
    """End a scenario: keep its figures (full suite: ``rows`` for ``docs/reliability.md``
    under ``key``), fail on any violated invariant, and close the run whatever happens."""
    try:
        if rows is not None:
            record_figures(key, title, command, rows, run.verdict)
        run.assert_ok(scenario)
    finally:
        run.close()


def record_figures(
    scenario: str, title: str, command: str, rows: dict[str, Any], verdict: inv.Verdict
) -> None:
    """Keep one full-suite scenario's figures for ``docs/reliability.md``."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    ignore = FIGURES_DIR.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")  # a stack folder is never source
    data = {
        "scenario": scenario,
        "title": title,
        "command": command,
        "rows": rows,
        "result": "pass" if not verdict.violations else "FAIL: " + "; ".join(verdict.failed),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "code": _code_state(),
    }
    (FIGURES_DIR / f"{scenario}.json").write_text(json.dumps(data, indent=2))


def _code_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "consumer",
                "online_models",
                "schemas",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown code"
    if not head:
        return "unknown code (not a git checkout)"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


#: The hand-written part of ``docs/reliability.md`` (what a run found, and what was done
#: about it): kept as it is when the figures are written again.
FINDINGS_MARKS = (
    "<!-- findings: written by hand, kept by make chaos -->",
    "<!-- end of findings -->",
)


def kept_findings(text: str) -> str:
    """The hand-written findings block of ``text`` (marks included), or "".

    >>> start, end = FINDINGS_MARKS
    >>> kept_findings(f"head\\n{start}\\nA run found...\\n{end}\\n## Kill") == (
    ...     f"{start}\\nA run found...\\n{end}"
    ... )
    True
    >>> kept_findings("no marks")
    ''
    """
    start, end = text.find(FINDINGS_MARKS[0]), text.find(FINDINGS_MARKS[1])
    return text[start : end + len(FINDINGS_MARKS[1])] if 0 <= start < end else ""


def write_reliability_doc() -> None:
    """Regenerate ``docs/reliability.md`` from every scenario's latest figures, keeping
    its hand-written findings (:func:`kept_findings`)."""
    files = sorted(FIGURES_DIR.glob("*.json")) if FIGURES_DIR.is_dir() else []
    if not files:
        return
    findings = kept_findings(RELIABILITY_DOC.read_text()) if RELIABILITY_DOC.exists() else ""
    parts = [DOC_HEAD]
    if findings:
        parts.append(findings + "\n")
    for f in files:
        d = json.loads(f.read_text())
        parts.append(f"## {d['title']}\n")
        parts.append(
            f"Reproduce: `{d['command']}`. Run {d['date']} on {d['code']}: **{d['result']}**.\n"
        )
        parts.append("| figure | value |\n| --- | --- |")
        for k, val in d["rows"].items():
            parts.append(f"| {k} | {val} |")
        parts.append("")
    RELIABILITY_DOC.write_text("\n".join(parts).rstrip() + "\n")


DOC_HEAD = """# Reliability: the chaos suite's figures

Written by `make chaos` (`tests/chaos/`, issue 8): each scenario runs real `tierstream run`
processes against a real Kafka broker and Redis server of its own (`.stack-chaos`, ports
19092/19093/16379), injects its faults, and holds the end state to a clean in-memory run
of the same input (`consumer/tools/replay.py`). What each scenario proves is in its test's
docstring; the invariants are in `tests/chaos/invariants.py`. A table is rewritten each
time its scenario runs; "FAIL" names the invariants that did not hold (the test output
has the records and the timeline).

Figures: *events* produced; *kills* (SIGKILL), *restarts*, *pauses* (SIGSTOP) of
instances; *outage* how long a server was down; *stall* how long after a fault began
until every partition with records waiting applied a new one; *lag peak* the most records
produced and not yet applied at any sample (every 0.25 s); *duplicates* extra copies of
tier changes on the output topic (re-published from outboxes); *runtime* of the scenario.
A machine with 2 cores runs the broker, Redis, the instances and the test.
"""
