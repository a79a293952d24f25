"""Bad input: malformed and hostile records (:mod:`tests.chaos.hostile`: every schema
violation, keys that disagree with ``user_id`` (another user's, null, empty, ~500 KB),
far-future and ancient timestamps, amounts of 1e308) mixed at seeded random places into a
valid keyed stream, consumed by two members.

What it proves: every bad record is in the DLQ, with the reason of its defect, and no
valid record is; the DLQ metric (``tierstream_dlq_records_total``, summed over the
members) equals the number of bad records; no member crashes or stalls (the group
catches up in time, so no record wedges a partition, e.g. through a watermark moved to
the year 9999 or a DLQ record over the broker's size limit that the outbox re-publishes
for ever); and the valid events' results (every user's state, every tier change) are
byte-equal to a clean run of the valid records alone: nothing hostile leaked into a
user's state.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from tests.chaos import invariants as inv
from tests.chaos.harness import Endpoints, StackControl
from tests.chaos.hostile import Hostile, hostile_records, kinds
from tests.chaos.scenario import Run, conclude

_JAN_2026_MS = 1_767_225_600_000


@dataclass(frozen=True)
class Plan:
    valid: GeneratorConfig
    hostile: int
    rate: float
    timeout: float
    seed: int


SMALL = Plan(GeneratorConfig(users=200, events=3_000, seed=21, days=60), kinds() * 2, 600, 20, 3)
FULL = Plan(GeneratorConfig(users=2_000, events=40_000, seed=22, days=120), 10_000, 1_000, 120, 4)


def bad_input_scenario(
    endpoints: Endpoints, workdir: Path, model: Path, plan: Plan
) -> tuple[Run, dict[str, object]]:
    valid = [(r.key, r.value) for r in generate(plan.valid)]
    users = sorted({(k or b"").decode() for k, _ in valid if k})
    bad = hostile_records(
        plan.hostile,
        users,
        seed=plan.seed,
        base_ms=_JAN_2026_MS,
        span_ms=plan.valid.days * 86_400_000,
    )
    rng = random.Random(plan.seed)
    slots = sorted(rng.randrange(len(valid) + 1) for _ in bad)
    stream: list[tuple[bytes | None, bytes]] = []
    hostile_at: dict[int, int] = {}  # index in the stream -> index in bad
    j = 0
    for i, rec in enumerate(valid):
        while j < len(slots) and slots[j] == i:
            hostile_at[len(stream)] = j
            stream.append((bad[j].key, bad[j].value))  # type: ignore[arg-type]
            j += 1
        stream.append(rec)
    while j < len(bad):
        hostile_at[len(stream)] = j
        stream.append((bad[j].key, bad[j].value))  # type: ignore[arg-type]
        j += 1

    run = Run(endpoints, workdir, model_file=model)
    try:
        cluster = run.cluster
        cluster.start_monitors()
        for name in ("a", "b"):
            cluster.add(name).start()
        cluster.wait_group(2)
        producer = run.produce(stream, plan.rate)
        metric: dict[str, float] = {}

        def scrape() -> None:
            for inst in cluster.instances.values():
                samples = inst.metrics() or {}
                for name, value in samples.items():
                    if name.startswith("tierstream_dlq_records_total"):
                        metric[name] = metric.get(name, 0.0) + value

        out = run.finish(plan.timeout, before_stop=scrape)
        v = run.verdict
        placed = {i: producer.placed[i] for i in hostile_at}
        expected = {pos: bad[hostile_at[i]].reason for i, pos in placed.items() if pos is not None}
        by_coord = {pos: bad[hostile_at[i]] for i, pos in placed.items() if pos is not None}
        bad_coords = set(expected)
        valid_inputs = [r for r in out.inputs if (r.partition, r.offset) not in bad_coords]
        ref = run.reference(valid_inputs) if out.caught_up else None
        run.check_end(out, None)
        if ref is not None:
            inv.states_equal(v, out.states, ref.store.users)
            inv.changes_complete(v, out.changes, ref.changes)
            found = inv.dead_letters(v, out.dead, expected)
            _explain(v, by_coord)
            total = sum(metric.values())
            v.check(
                "the DLQ metric equals the number of bad records",
                []
                if total == len(bad)
                else [
                    f"tierstream_dlq_records_total sums to {total:g}, "
                    f"{len(bad)} bad records; by reason {metric}"
                ],
            )
        else:
            found = None
        rows: dict[str, object] = {
            "valid events": len(valid),
            "bad records": len(bad),
            "kinds of bad record": kinds(),
            "dead letters by reason": ", ".join(
                f"{k} {n}" for k, n in sorted((found or {}).items())
            ),
            "crashes": len(cluster.crashes),
            "lag peak, records": cluster.lag_peak(),
            "runtime, s": round(time.monotonic() - run.started, 1),
        }
        return run, rows
    except BaseException:
        run.close()
        raise


def _explain(verdict: inv.Verdict, by_coord: Mapping[tuple[int, int], Hostile]) -> None:
    """Name the kind of bad record behind each DLQ violation (p@offset -> what it was)."""
    for violation in verdict.violations:
        if "DLQ" in violation.invariant or "dead letter" in violation.invariant:
            violation.examples = [_name(e, by_coord) for e in violation.examples]


def _name(example: str, by_coord: Mapping[tuple[int, int], Hostile]) -> str:
    head = example.split(" ", 1)[0].split(":", 1)[0]
    if head.startswith("p") and "@" in head:
        p, o = head[1:].split("@")
        h = by_coord.get((int(p), int(o)))
        if h is not None:
            return f"{example} [{h.family}: {h.what}]"
    return example


@pytest.mark.chaos
@pytest.mark.integration
@pytest.mark.slow
def test_bad_input_small(small_endpoints: Endpoints, trained_model: Path, tmp_path: Path) -> None:
    """Every kind of bad record twice (160) in a 3,000-event stream."""
    run, _ = bad_input_scenario(small_endpoints, tmp_path, trained_model, SMALL)
    conclude(run, "bad input (small)")


@pytest.mark.chaos
@pytest.mark.timeout(1200)
def test_bad_input_full(chaos_stack: StackControl, trained_model: Path, workdir: Path) -> None:
    """10,000 bad records of every kind in a 40,000-event stream."""
    run, rows = bad_input_scenario(chaos_stack.endpoints, workdir, trained_model, FULL)
    conclude(
        run,
        "bad input",
        rows,
        key="5-bad-input",
        title="Bad input",
        command="make chaos PYTEST_ARGS='-k test_bad_input_full'",
    )
