"""Forget: while a keyed stream flows into two instances (frozen trained model), some
users are erased with ``tierstream forget``, just after a burst of their own events that
is still in flight; one instance is killed during the erasure and restarted; later, some
of the erased users come back.

What it proves: after the erasure no key of the deployment mentions a forgotten user (no
state, no timer, no outbox entry, no model-health memory); each has one ``erased`` change
(its lifetime's last seq, with the request id) and a tombstone on the current-tier topic;
the in-flight events, applied before the erasure in the user's partition, did not bring
them back, nor did the kill (a batch re-applied from the outbox or the input); a user who
comes back starts a new lifetime at seq 1 whose event ids never repeat the erased one's;
every forget request is consumed and committed. The whole end state equals the clean run
of the input topic as the service wrote it (the forwarded requests included), as in every
frozen-model scenario: states byte-equal, every change published, seqs gap-free per
lifetime.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from tests.chaos.harness import REPO, Endpoints, StackControl, committed_offsets, read_topic
from tests.chaos.scenario import Run, conclude

REQUEST_ID = "chaos-erasure-1"


@dataclass(frozen=True)
class Plan:
    stream: GeneratorConfig
    rate: float
    forgotten: int
    returning: int  # of the forgotten users, how many come back
    timeout: float


SMALL = Plan(GeneratorConfig(users=150, events=3_000, seed=41, days=60), 300, 8, 3, 45)
FULL = Plan(GeneratorConfig(users=2_000, events=40_000, seed=42, days=120), 600, 100, 25, 180)


def _event(user: str, n: int, t_ms: int) -> tuple[bytes, bytes]:
    body = {
        "event_id": f"{user}-x{n}",
        "user_id": user,
        "event_type": "purchase" if n % 2 else "add_to_cart",
        "timestamp": t_ms,
        "amount": 40.0 + n,
        "currency": "EUR",
    }
    return user.encode(), orjson.dumps(body)


def _ts(value: bytes) -> int:
    from schemas.decode import parse_rfc3339_ms

    t = orjson.loads(value)["timestamp"]
    return t if isinstance(t, int) else parse_rfc3339_ms(t)


def forget_scenario(
    endpoints: Endpoints, workdir: Path, model: Path, plan: Plan
) -> tuple[Run, dict[str, object]]:
    run = Run(endpoints, workdir, model_file=model)
    try:
        cluster, v = run.cluster, run.verdict
        cluster.start_monitors()
        for name in ("a", "b"):
            cluster.add(name).start()
        cluster.wait_group(2)
        records = [(r.key, r.value) for r in generate(plan.stream)]
        half = len(records) // 2
        head, tail = records[:half], records[half:]
        users = sorted({k.decode() for k, _ in head if k})
        gone = users[:: max(1, len(users) // plan.forgotten)][: plan.forgotten]
        back = gone[: plan.returning]
        gone_keys = {u.encode() for u in gone}
        tail = [(k, val) for k, val in tail if k not in gone_keys]  # they leave
        head_end = max(_ts(val) for _, val in head if b'"timestamp"' in val)

        run.produce(head, plan.rate)
        assert run.producer is not None
        run.producer.join(run.producing_s + 60)
        # A burst of their own events, still unread when the requests are sent.
        in_flight = [_event(u, n, head_end + 60_000 * (n + 1)) for u in gone for n in range(2)]
        run.produce(in_flight, None).join(60)
        t_forget = run.timeline.note(f"tierstream forget: {len(gone)} users")
        sent = subprocess.run(
            [sys.executable, "-m", "consumer.cli", "forget", *gone, "--request-id", REQUEST_ID],
            env=cluster.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        v.check("tierstream forget succeeds", [] if sent.returncode == 0 else [sent.stderr])
        time.sleep(0.3)
        victim = cluster.instances["b"]
        victim.kill("during the erasure")
        time.sleep(1.0)
        victim.start()

        tail_producer = run.produce(tail, plan.rate)  # the stream goes on meanwhile
        requests = read_topic(endpoints.kafka, run.names.forget)
        forget_end = {p: 0 for p in range(run.partitions)}
        for rec in requests:
            forget_end[rec.partition] = max(forget_end[rec.partition], rec.offset + 1)
        forwarded = cluster.wait_for(
            "every forget request forwarded and committed",
            lambda: _committed(run, forget_end),
            plan.timeout,
        )
        t_forwarded = time.monotonic()
        v.check(
            "every forget request is consumed and committed",
            [] if forwarded else [f"forget topic ends {forget_end}, not all committed"],
        )
        tail_producer.join(run.producing_s + 60)
        # Left before they come back: nothing of theirs may be in the store any more, once
        # everything in the input (the forwarded requests too) is applied.
        end = {p: 0 for p in range(run.partitions)}
        for rec in read_topic(endpoints.kafka, run.names.input):
            end[rec.partition] = max(end[rec.partition], rec.offset + 1)
        cluster.wait_caught_up(end, plan.timeout)
        left = {u: cluster.redis.mentions(u) for u in gone}
        v.check(
            "no key mentions a forgotten user",
            [f"{u}: {'; '.join(found[:4])}" for u, found in left.items() if found],
        )

        last = max(_ts(val) for _, val in records if b'"timestamp"' in val)
        returning = [_event(u, 10 + n, last + 3_600_000 * (n + 1)) for u in back for n in range(2)]
        run.produce(returning, None)
        out = run.finish(plan.timeout)
        ref = run.reference(out.inputs) if out.caught_up else None
        figures = run.check_end(out, ref)

        changes = [orjson.loads(r.value or b"") for r in out.changes]
        erased: dict[str, set[str]] = {u: set() for u in gone}
        lives: dict[str, dict[str, set[str]]] = {u: {} for u in gone}
        for c in changes:
            if c["user_id"] in erased:
                lives[c["user_id"]].setdefault(c["lifetime_start"], set()).add(c["event_id"])
                if c["reason"]["kind"] == "erased":
                    erased[c["user_id"]].add(c["event_id"])
        v.check(
            "erased changes carry the request id",
            [
                f"{c['user_id']}: {c['reason']}"
                for c in changes
                if c["reason"]["kind"] == "erased" and c["reason"].get("request_id") != REQUEST_ID
            ],
        )
        v.check(
            "one erased change per forgotten user",
            [f"{u}: {len(ids)} erased changes" for u, ids in erased.items() if len(ids) != 1],
        )
        tiers = read_topic(endpoints.kafka, run.names.tiers)
        last_value = {r.key: r.value for r in sorted(tiers, key=lambda r: r.offset)}
        v.check(
            "a tombstone for each forgotten user on the current-tier topic",
            [
                f"{u}: last record {last_value.get(u.encode(), 'none')!r:.60}"
                for u in gone
                if u not in back and (u.encode() not in last_value or last_value[u.encode()])
            ]
            + [f"{u}: no tombstone" for u in back if not any(r.key == u.encode() for r in tiers)],
        )
        v.check(
            "a returning user starts a new lifetime with event ids never seen before",
            [
                f"{u}: {len(lives[u])} lifetimes"
                for u in back
                if len(lives[u]) != 2 or set.intersection(*lives[u].values())
            ],
        )
        v.check(
            "non-vacuous: each forgotten user had tier changes before the erasure",
            [f"{u}: nothing but the erasure" for u in gone if not _before(lives[u])],
        )
        rows: dict[str, object] = {
            "events": len(head) + len(in_flight) + len(tail) + len(returning),
            "instances": 2,
            "users forgotten": len(gone),
            "their events in flight at the request": len(in_flight),
            "kills during the erasure": "1 (SIGKILL 0.3 s after the requests, restarted 1 s later)",
            "every request forwarded and committed, s after the requests": round(
                t_forwarded - t_forget, 1
            ),
            "erased changes": sum(len(ids) for ids in erased.values()),
            "forgotten users with something left": sum(1 for found in left.values() if found),
            "returning users (new lifetime, new ids)": len(back),
            "duplicate tier changes": figures.get("duplicate changes", "n/a"),
            "crashes": len(cluster.crashes),
            "runtime, s": round(time.monotonic() - run.started, 1),
        }
        return run, rows
    except BaseException:
        run.close()
        raise


def _before(lives: dict[str, set[str]]) -> bool:
    first = min(lives, default=None)
    return first is not None and len(lives[first]) > 1


def _committed(run: Run, end: dict[int, int]) -> bool:
    got = committed_offsets(run.endpoints.kafka, run.names.group, run.names.forget)
    return all((got.get(p) or 0) >= n for p, n in end.items())


@pytest.mark.chaos
@pytest.mark.integration
@pytest.mark.slow
def test_forget_small(small_endpoints: Endpoints, trained_model: Path, tmp_path: Path) -> None:
    """Eight of 150 users forgotten, three come back."""
    run, _ = forget_scenario(small_endpoints, tmp_path, trained_model, SMALL)
    conclude(run, "forget (small)")


@pytest.mark.chaos
@pytest.mark.timeout(1200)
def test_forget_full(chaos_stack: StackControl, trained_model: Path, workdir: Path) -> None:
    """A hundred of 2,000 users forgotten during a 40,000-event stream, 25 come back."""
    run, rows = forget_scenario(chaos_stack.endpoints, workdir, trained_model, FULL)
    conclude(
        run,
        "forget",
        rows,
        key="7-forget",
        title="Forget, with an instance killed during the erasure",
        command="make chaos PYTEST_ARGS='-k test_forget_full'",
    )
