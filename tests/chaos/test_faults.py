"""Store and broker faults: while two members consume a keyed stream, one server goes
away and comes back, with nobody intervening (no restart of an instance, no offset reset):

- ``redis-restart``: Redis stopped (graceful: its AOF is complete), down for a while,
  started again with all its data;
- ``redis-rollback``: an RDB snapshot taken early, then Redis stopped and restarted from
  that snapshot: state, applied offsets and outboxes go back in time while Kafka's
  committed offsets stay ahead (a failover to a lagging replica, a restore from backup,
  a lost AOF tail). The service must re-read from Redis's applied offsets;
- ``kafka-restart``: the broker stopped (graceful), down for a while, started again.

What it proves: nothing lost, nothing applied twice (final state byte-equal to the clean
run, every tier change and dead letter of the clean run published, seqs gap-free and in
order; after a rollback a recomputed change may differ from its first copy in
``emitted_at`` only); no member crashes; ``/readyz`` (polled every 0.2 s) answers "not
ready" during the outage once the members could notice it (3 s for Redis, 5 s for
Kafka) and "ready" again within 45 s after the server is back.

The small variants (Redis only) run on a private ``redis-server`` the test starts on a
free port, next to the standard Kafka; the full ones on the chaos stack.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from tests.chaos import invariants as inv
from tests.chaos.harness import Endpoints, StackControl, private_redis
from tests.chaos.scenario import Run, conclude, fmt_seconds

DETECT_S = {"redis": 3.0, "kafka": 5.0}
RECOVER_S = 45.0


@dataclass(frozen=True)
class Plan:
    stream: GeneratorConfig
    rate: float
    outage_s: float
    timeout: float


SMALL = Plan(
    GeneratorConfig(users=200, events=3_000, seed=41, days=60, bad_fraction=0.01), 250, 5, 30
)
FULL = Plan(
    GeneratorConfig(users=2_000, events=40_000, seed=42, days=120, bad_fraction=0.005), 600, 12, 120
)


def fault_scenario(
    endpoints: Endpoints,
    stack: StackControl,
    workdir: Path,
    model: Path,
    plan: Plan,
    fault: str,
) -> tuple[Run, dict[str, object]]:
    run = Run(endpoints, workdir, model_file=model)
    try:
        cluster = run.cluster
        cluster.start_monitors()
        for name in ("a", "b"):
            cluster.add(name).start()
        cluster.wait_group(2)
        records = [(r.key, r.value) for r in generate(plan.stream)]
        duration = len(records) / plan.rate
        run.produce(records, plan.rate)
        server = "kafka" if fault.startswith("kafka") else "redis"
        snapshot = workdir / "redis-snapshot.rdb"
        if fault == "redis-rollback":
            time.sleep(duration / 5)
            stack.redis_snapshot(snapshot)
            run.timeline.note(
                f"Redis snapshot taken, applied offsets {cluster.redis.progress()[0]}"
            )
            time.sleep(duration / 5)
        else:
            time.sleep(duration / 3)
        t_down = run.timeline.note(f"{server} stopped ({fault})")
        stack.stop(server)
        time.sleep(plan.outage_s)
        # The server answers before the start command returns (it waits for an answer,
        # slowly on a loaded machine): a 'ready' after this moment is no lie.
        t_starting = run.timeline.note(f"{server} starting")
        if fault == "redis-rollback":
            stack.redis_restore(snapshot)
        else:
            stack.start(server)
        t_up = run.timeline.note(f"{server} back")
        if fault == "redis-rollback":
            run.timeline.note(f"applied offsets now {cluster.redis.progress()[0]}")
        out = run.finish(plan.timeout)
        ref = run.reference(out.inputs) if out.caught_up else None
        figures = run.check_end(out, ref, strict_copies=fault != "redis-rollback")
        inv.readiness(
            run.verdict,
            cluster.ready,
            [(t_down, t_starting, f"{fault} ({t_up - t_down:.1f}s down)")],
            detect_s=DETECT_S[server],
            recover_s=RECOVER_S,
            end=time.monotonic(),
        )
        answers = [s for s in cluster.ready if t_down <= s[0] <= t_up]
        rows: dict[str, object] = {
            "events": len(records),
            "outage, s": round(t_up - t_down, 1),
            "stall (fault until every partition applied a record again), s": fmt_seconds(
                cluster.pause_after(t_down)
            ),
            "backlog worked off (lag back to its pre-fault level + 2 s of input), s after "
            "the server returned": fmt_seconds(
                cluster.back_to_lag(t_up, cluster.lag_at(t_down) + round(2 * plan.rate))
            ),
            "/readyz answers during the outage": ", ".join(
                f"{k} {sum(1 for s in answers if s[3] == k)}"
                for k in ("ready", "not ready", "no answer")
            ),
            **run.last_rows(figures),
        }
        return run, rows
    except BaseException:
        run.close()
        raise


@pytest.mark.chaos
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["redis-restart", "redis-rollback"])
def test_store_fault_small(
    small_endpoints: Endpoints, trained_model: Path, tmp_path: Path, fault: str
) -> None:
    """A private Redis restarted, or rolled back to a snapshot, under a 4,000-event stream."""
    with private_redis(tmp_path / "redis") as stack:
        endpoints = Endpoints(small_endpoints.kafka, stack.endpoints.redis)
        run, _ = fault_scenario(endpoints, stack, tmp_path, trained_model, SMALL, fault)
        conclude(run, f"{fault} (small)")


@pytest.mark.chaos
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("fault", ["redis-restart", "redis-rollback", "kafka-restart"])
def test_fault_full(
    chaos_stack: StackControl, trained_model: Path, workdir: Path, fault: str
) -> None:
    """The fault under a 40,000-event stream, on the chaos stack."""
    run, rows = fault_scenario(
        chaos_stack.endpoints, chaos_stack, workdir, trained_model, FULL, fault
    )
    conclude(
        run,
        fault,
        rows,
        key=f"3-{fault}",
        title=f"Fault: {fault}",
        command=f"make chaos PYTEST_ARGS='-k \"test_fault_full and {fault}\"'",
    )
