"""Zombie: a member is frozen (SIGSTOP, heartbeats included) at an exact point of the
commit protocol while it owns partitions, the group gives its partitions to the other
member once its session (10 s) expires, and then it wakes up (SIGCONT) and carries on
with the batch it held, as a member stalled by a long GC or VM pause does.

Each round freezes a member right after one step of its next batch (``apply``: it will
try to save a batch the new owner also reads; ``save``: its outbox entries are still to
publish; ``publish``: it will try to commit) and wakes it in one of these ways:

- ``at-takeover``: as soon as the group is stable with the other member holding every
  partition (racing the new owner's first batch);
- ``after``: a few seconds later (the new owner has moved on);
- ``save-then-die``: the new owner is itself frozen right after loading its next batch,
  the zombie wakes, saves the batch it held (its WATCH may still hold) and is killed
  before publishing, then the new owner wakes: the zombie's outbox entries must still be
  published, by the new owner, before any later change of those users.

What it proves: no outbox entry lost (every tier change and dead letter of the clean run
is published, every stored seq is on the topic, outboxes end empty), none re-published
out of order (per user, the first occurrence of each seq comes in seq order), state
byte-equal to the clean run (frozen trained model), and no member crashes on waking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from tests.chaos.cluster import Cluster, Instance
from tests.chaos.harness import SESSION_TIMEOUT_S, Endpoints, StackControl
from tests.chaos.scenario import Run, conclude


@dataclass(frozen=True)
class Plan:
    stream: GeneratorConfig
    rate: float
    rounds: tuple[tuple[str, str], ...]  # (freeze after step, how it wakes)
    timeout: float


SMALL = Plan(
    GeneratorConfig(users=200, events=2_400, seed=51, days=60, bad_fraction=0.01),
    120,
    (("apply", "at-takeover"),),
    45,
)
FULL = Plan(
    GeneratorConfig(users=2_000, events=40_000, seed=52, days=120, bad_fraction=0.005),
    250,
    (
        ("apply", "at-takeover"),
        ("save", "after"),
        ("apply", "save-then-die"),
        ("publish", "at-takeover"),
        ("apply", "save-then-die"),
    ),
    120,
)


def _holds_all(cluster: Cluster) -> bool:
    state, members = cluster.group_state()
    holding = [m for m in members if m]
    return state == "Stable" and len(holding) == 1 and len(holding[0]) == cluster.partitions


def freeze(cluster: Cluster, inst: Instance, step: str) -> bool:
    """Freeze ``inst`` right after ``step`` of its next batch; True once it is frozen."""
    inst.request(step, "stop")
    if cluster.wait_for(f"{inst.name} frozen after {step}", inst.is_stopped, 30):
        inst.paused = True
        cluster.timeline.note(f"{inst.name} frozen after {step}")
        return True
    inst.cancel_requests()
    return False


def zombie_round(
    run: Run, zombie: Instance, owner: Instance, step: str, wake: str
) -> dict[str, float | str]:
    cluster = run.cluster
    if not freeze(cluster, zombie, step):
        last = "\n".join(f"      {line}" for line in zombie.stacks())
        return {"missed": f"{zombie.name} never froze after {step}; its last lines:\n{last}"}
    t_frozen = time.monotonic()
    took_over = cluster.wait_for(
        "the other member to hold every partition",
        lambda: _holds_all(cluster),
        SESSION_TIMEOUT_S + 30,
    )
    t_takeover = time.monotonic()
    if wake == "after":
        time.sleep(3.0)
    elif wake == "save-then-die" and took_over and freeze(cluster, owner, "load"):
        zombie.request("save", "kill")
    zombie.resume(f"({wake})")
    if wake == "save-then-die":
        if cluster.wait_for(f"{zombie.name} to die after save", lambda: not zombie.alive, 20):
            assert zombie.proc is not None
            zombie.proc.wait(10)
            zombie._record_exit(True)
        else:
            zombie.cancel_requests()
        if owner.paused:
            owner.resume("(the new owner wakes)")
        if not zombie.alive:
            time.sleep(1.0)
            zombie.start()
    cluster.wait_group(2, timeout=SESSION_TIMEOUT_S + 40)
    if not took_over:
        return {"missed": f"{owner.name} never held every partition while {zombie.name} was frozen"}
    return {"frozen, s": round(t_takeover - t_frozen, 1)}


def zombie_scenario(
    endpoints: Endpoints, workdir: Path, model: Path, plan: Plan
) -> tuple[Run, dict[str, object]]:
    run = Run(endpoints, workdir, model_file=model)
    try:
        cluster = run.cluster
        cluster.start_monitors()
        a, b = cluster.add("a"), cluster.add("b")
        a.start()
        b.start()
        cluster.wait_group(2)
        records = [(r.key, r.value) for r in generate(plan.stream)]
        run.produce(records, plan.rate)
        time.sleep(2.0)
        pauses: list[str] = []
        misses: list[str] = []
        for i, (step, wake) in enumerate(plan.rounds):
            zombie, owner = (a, b) if i % 2 == 0 else (b, a)
            got = zombie_round(run, zombie, owner, step, wake)
            pauses.append(f"{step}/{wake}: {got.get('frozen, s', 'missed')}")
            if "missed" in got:
                misses.append(f"round {i + 1} ({step}/{wake}): {got['missed']}")
        if run.producer is not None and run.producer.done:
            run.timeline.note("the stream ended during the rounds")
        out = run.finish(plan.timeout)
        ref = run.reference(out.inputs) if out.caught_up else None
        figures = run.check_end(out, ref)
        run.verdict.check(
            "scenario exercised: each zombie froze and its partitions were taken over", misses
        )
        rows: dict[str, object] = {
            "events": len(records),
            "rounds (freeze after / wake), s frozen until takeover": "; ".join(pauses),
            "outboxes re-published": len(cluster.republished_lines),
            **run.last_rows(figures),
        }
        return run, rows
    except BaseException:
        run.close()
        raise


@pytest.mark.chaos
@pytest.mark.integration
@pytest.mark.slow
def test_zombie_small(small_endpoints: Endpoints, trained_model: Path, tmp_path: Path) -> None:
    """One zombie (frozen after apply, woken at takeover) in a 3,000-event stream."""
    run, _ = zombie_scenario(small_endpoints, tmp_path, trained_model, SMALL)
    conclude(run, "zombie (small)")


@pytest.mark.chaos
@pytest.mark.timeout(1200)
def test_zombie_full(chaos_stack: StackControl, trained_model: Path, workdir: Path) -> None:
    """Five zombie rounds of every kind in a 40,000-event stream."""
    run, rows = zombie_scenario(chaos_stack.endpoints, workdir, trained_model, FULL)
    conclude(
        run,
        "zombie",
        rows,
        key="4-zombie",
        title="Zombie (SIGSTOP, reassigned, SIGCONT)",
        command="make chaos PYTEST_ARGS='-k test_zombie_full'",
    )
