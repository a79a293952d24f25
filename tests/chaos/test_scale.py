"""Scale: the group grows from one member to three and shrinks back to one while a keyed
stream flows (new members join, then two leave with SIGTERM), frozen trained model.

What it proves: rebalances that move partitions between live members (graceful, no
crash) lose and double nothing: the final Redis state is byte-equal to the clean run,
every tier change of the clean run is on the topic once per event id (copies identical),
seqs are gap-free and in order, the outboxes are empty and every offset committed; each
member stops cleanly on SIGTERM.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from tests.chaos.harness import Endpoints, StackControl
from tests.chaos.scenario import Run, conclude, fmt_seconds


@dataclass(frozen=True)
class Plan:
    stream: GeneratorConfig
    rate: float
    timeout: float


SMALL = Plan(GeneratorConfig(users=200, events=3_000, seed=31, days=60, bad_fraction=0.01), 250, 30)
FULL = Plan(
    GeneratorConfig(users=2_000, events=60_000, seed=32, days=120, bad_fraction=0.005), 600, 120
)


def scale_scenario(
    endpoints: Endpoints, workdir: Path, model: Path, plan: Plan
) -> tuple[Run, dict[str, object]]:
    run = Run(endpoints, workdir, model_file=model)
    try:
        cluster = run.cluster
        cluster.start_monitors()
        first = cluster.add("a")
        first.start()
        cluster.wait_group(1)
        records = [(r.key, r.value) for r in generate(plan.stream)]
        duration = len(records) / plan.rate
        run.produce(records, plan.rate)
        time.sleep(duration / 3)
        t_up = run.timeline.note("scale 1 -> 3")
        for name in ("b", "c"):
            cluster.add(name).start()
        grew = cluster.wait_group(3, timeout=60)
        time.sleep(max(0.0, duration / 3 - (time.monotonic() - t_up)))
        t_down = run.timeline.note("scale 3 -> 1")
        codes = {name: cluster.instances[name].terminate() for name in ("b", "c")}
        shrank = cluster.wait_group(1, timeout=60)
        out = run.finish(plan.timeout)
        out.stops.update(codes)
        ref = run.reference(out.inputs) if out.caught_up else None
        figures = run.check_end(out, ref)
        run.verdict.check(
            "the group reached 3 members, then 1",
            [x for x, ok in (("never 3 members", grew), ("never back to 1", shrank)) if not ok],
        )
        rows: dict[str, object] = {
            "events": len(records),
            "members": "1 -> 3 -> 1",
            "stall after scaling up, s": fmt_seconds(cluster.pause_after(t_up)),
            "stall after scaling down, s": fmt_seconds(cluster.pause_after(t_down)),
            **run.last_rows(figures),
        }
        return run, rows
    except BaseException:
        run.close()
        raise


@pytest.mark.chaos
@pytest.mark.integration
@pytest.mark.slow
def test_scale_small(small_endpoints: Endpoints, trained_model: Path, tmp_path: Path) -> None:
    """1 -> 3 -> 1 members over a 4,000-event stream."""
    run, _ = scale_scenario(small_endpoints, tmp_path, trained_model, SMALL)
    conclude(run, "scale (small)")


@pytest.mark.chaos
@pytest.mark.timeout(1200)
def test_scale_full(chaos_stack: StackControl, trained_model: Path, workdir: Path) -> None:
    """1 -> 3 -> 1 members over a 60,000-event stream."""
    run, rows = scale_scenario(chaos_stack.endpoints, workdir, trained_model, FULL)
    conclude(
        run,
        "scale",
        rows,
        key="2-scale",
        title="Scale 1 -> 3 -> 1, frozen model",
        command="make chaos PYTEST_ARGS='-k test_scale_full'",
    )
