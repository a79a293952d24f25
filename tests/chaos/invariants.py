"""The invariants every chaos scenario checks, each a function that adds what it finds to
a :class:`Verdict` (so one failing invariant does not hide the others), and the clean
reference run the live results are held to.

The reference ("clean run") is the input topic read back, sorted by (partition, offset),
through :func:`consumer.tools.replay.replay`: the service's own batch step and commit
protocol, in memory, one pass, no fault. Users are partitioned by key and timers by
partition, so with a frozen model each user's result depends only on its partition's
record sequence, which that order reproduces.

Tier changes are compared whole, except ``emitted_at``: the live service stamps it with
the wall clock, a replay with the change's event time (``consumer/tools/replay.py``). Two
copies of one change on the topic are compared byte for byte, ``emitted_at`` included: a
re-published change comes from the outbox, the very bytes saved.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from consumer.service.records import InputRecord, OutputRecord
from consumer.service.state_store import MemoryStateStore
from consumer.tools.replay import replay
from online_models.engine import TierEngine
from online_models.state_codec import state_json
from online_models.timefmt import iso_utc_ms

#: How many examples a violation lists.
EXAMPLES = 5


@dataclass
class Violation:
    """One invariant that does not hold, with how often and examples."""

    invariant: str
    count: int
    examples: list[str]

    def render(self) -> str:
        more = f" (first {len(self.examples)})" if self.count > len(self.examples) else ""
        lines = [f"- {self.invariant}: {self.count} violation(s){more}"]
        lines.extend(f"    {e}" for e in self.examples)
        return "\n".join(lines)


@dataclass
class Verdict:
    """The violations found so far, and which invariants were checked."""

    violations: list[Violation] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def check(self, invariant: str, bad: Sequence[str], total: int | None = None) -> None:
        """Record that ``invariant`` was checked; ``bad`` lists its violations."""
        self.checked.append(invariant)
        if bad:
            self.violations.append(Violation(invariant, total or len(bad), list(bad[:EXAMPLES])))

    @property
    def failed(self) -> list[str]:
        return [v.invariant for v in self.violations]

    def render(self) -> str:
        if not self.violations:
            return f"all {len(self.checked)} invariants hold"
        return "\n".join(v.render() for v in self.violations)


# ------------------------------------------------------------------------ reference ---


@dataclass
class Reference:
    """One clean in-memory pass over the input."""

    outputs: list[OutputRecord]
    store: MemoryStateStore
    output_topic: str
    dlq_topic: str

    @property
    def changes(self) -> list[bytes]:
        return [o.value for o in self.outputs if o.topic == self.output_topic and o.value]

    @property
    def dead(self) -> list[bytes]:
        return [o.value for o in self.outputs if o.topic == self.dlq_topic and o.value]


def reference(
    records: Iterable[InputRecord], engine: TierEngine, *, output_topic: str, dlq_topic: str
) -> Reference:
    """The clean run of ``records`` (sorted by partition and offset) through ``engine``."""
    ordered = sorted(records, key=lambda r: (r.partition, r.offset))
    outputs, store = replay(ordered, engine, output_topic=output_topic, dlq_topic=dlq_topic)
    return Reference(outputs, store, output_topic, dlq_topic)


def body(value: bytes) -> dict[str, Any]:
    """A tier change's body without ``emitted_at`` (wall clock live, event time replayed)."""
    data: dict[str, Any] = orjson.loads(value)
    data.pop("emitted_at", None)
    return data


def _diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {str(a.get(k))[:60]} != {str(b.get(k))[:60]}" for k in keys[:4])


# ------------------------------------------------------------------------ invariants ---


def states_equal(verdict: Verdict, live: Mapping[str, bytes], ref: Mapping[str, bytes]) -> None:
    """Exactly-once state: every user's stored state is byte-equal to the clean run's, and
    no user exists on one side only."""
    bad: list[str] = []
    for user in sorted(ref.keys() - live.keys()):
        bad.append(f"{user}: in the clean run, missing from Redis")
    for user in sorted(live.keys() - ref.keys()):
        bad.append(f"{user}: in Redis, not in the clean run")
    for user in sorted(ref.keys() & live.keys()):
        if live[user] != ref[user]:
            a, b = state_json(live[user]), state_json(ref[user])
            if a.get("features") != b.get("features"):
                fa, fb = a.get("features", {}), b.get("features", {})
                bad.append(f"{user}: features differ ({_diff(fa, fb)})")
            else:
                bad.append(f"{user}: {_diff(a, b)}")
    verdict.check("final Redis user states byte-equal to the clean run", bad)


def populations_exact(
    verdict: Verdict,
    counted: Mapping[int, Mapping[str, int]],
    found: Mapping[int, Mapping[str, int]],
) -> None:
    """Per partition, the tier population Redis counted (in the transactions that wrote
    the states) is exactly its stored users' tiers: nobody counted twice or left behind,
    whatever was killed, restarted or rolled back."""
    bad = [
        f"partition {p}: counted {dict(counted.get(p, {}))}, stored users {dict(found[p])}"
        for p in sorted(found)
        if dict(counted.get(p, {})) != dict(found[p])
    ]
    verdict.check("per partition, the tier population counted is its users' tiers", bad)


def features_equal(verdict: Verdict, live: Mapping[str, bytes], ref: Mapping[str, bytes]) -> None:
    """With learning on, tiers may differ (the models learn from another interleaving), but
    features and event counts depend on the user's own events only: equal."""
    bad: list[str] = []
    for user in sorted(ref.keys() ^ live.keys()):
        bad.append(f"{user}: on one side only ({'Redis' if user in live else 'clean run'})")
    for user in sorted(ref.keys() & live.keys()):
        fa = state_json(live[user]).get("features")
        fb = state_json(ref[user]).get("features")
        if fa != fb:
            bad.append(f"{user}: {_diff(fa or {}, fb or {})}")
    verdict.check("features and event counts equal to the clean run", bad)


def first_copies(records: Iterable[InputRecord]) -> dict[str, bytes]:
    """Each tier change's first copy on the topic, by event id."""
    out: dict[str, bytes] = {}
    for rec in records:
        value = rec.value or b""
        out.setdefault(orjson.loads(value)["event_id"], value)
    return out


def changes_complete(verdict: Verdict, live: Sequence[InputRecord], ref: Sequence[bytes]) -> None:
    """Every tier change of the clean run is on the topic, with the same body (but
    ``emitted_at``); and nothing else is."""
    got = first_copies(live)
    want = {orjson.loads(v)["event_id"]: v for v in ref}
    missing = [
        f"{b['user_id']} seq {b['seq']} ({eid}) missing"
        for eid, v in want.items()
        if eid not in got
        for b in [body(v)]
    ]
    verdict.check(
        "every tier change of the clean run is on the output topic", missing, len(missing)
    )
    differ = [
        f"{body(v)['user_id']} seq {body(v)['seq']}: {_diff(body(got[eid]), body(v))}"
        for eid, v in want.items()
        if eid in got and body(got[eid]) != body(v)
    ]
    extra = [
        f"{b['user_id']} seq {b['seq']} ({eid}): not a change of the clean run"
        for eid, v in got.items()
        if eid not in want
        for b in [body(v)]
    ]
    verdict.check("published tier changes equal the clean run's (but emitted_at)", differ + extra)


def copies_identical(
    verdict: Verdict, records: Sequence[InputRecord], *, key: str, what: str
) -> int:
    """Every copy of one output (same ``key`` field: ``event_id``, or the source
    coordinates of a dead letter) is byte-identical. Returns how many extra copies."""
    copies: dict[Any, set[bytes]] = defaultdict(set)
    counts: Counter[Any] = Counter()
    for rec in records:
        value = rec.value or b""
        data = orjson.loads(value)
        ident = data[key] if key != "source" else (data["source_partition"], data["source_offset"])
        copies[ident].add(value)
        counts[ident] += 1
    bad = [
        f"{ident}: {len(values)} different bodies, e.g. "
        + _diff(*(orjson.loads(v) for v in sorted(values)[:2]))
        for ident, values in copies.items()
        if len(values) > 1
    ]
    verdict.check(f"duplicate {what} byte-identical", bad)
    return sum(n - 1 for n in counts.values())


def seq_gap_free(
    verdict: Verdict,
    live: Sequence[InputRecord],
    states: Mapping[str, bytes],
    *,
    expiry: bool = False,
) -> None:
    """Per user and lifetime, the seqs on the topic are exactly 1..n. For the lifetime the
    stored state is in, n is its seq (none missing: a stored change never published; none
    beyond: published, never stored). A lifetime with no state left must have ended with
    its ``erased`` change as n (``tierstream forget``), or, where ``expiry`` is allowed,
    by the state's time-to-live; anything else is a lost state."""
    seen: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    for rec in live:
        data = orjson.loads(rec.value or b"")
        seen[data["user_id"], data["lifetime_start"]][int(data["seq"])] = data["reason"]["kind"]
    current: dict[tuple[str, str], int] = {}
    for user, raw in states.items():
        state = state_json(raw)
        current[user, iso_utc_ms(state["born_ms"])] = int(state["seq"])
    bad: list[str] = []
    for user, life in sorted(seen.keys() | current.keys()):
        got = seen.get((user, life), {})
        stored = current.get((user, life))
        top = stored if stored is not None else max(got)
        missing = sorted(set(range(1, top + 1)) - got.keys())
        beyond = sorted(s for s in got if s > top)
        if missing:
            bad.append(f"{user} (lifetime {life}): seq {top}, never published {missing[:8]}")
        if beyond:
            bad.append(f"{user} (lifetime {life}): stored seq {top}, published {beyond[:8]}")
        if stored is None and got[top] != "erased" and not expiry:
            bad.append(f"{user} (lifetime {life}): no state, and seq {top} is no erasure")
    verdict.check("per user and lifetime, seq gap-free: published seqs are 1..n", bad)


def first_occurrences_in_order(verdict: Verdict, live: Sequence[InputRecord]) -> None:
    """Per user and lifetime, the first occurrence of each seq on the topic comes in seq
    order (read in partition offset order, the order a subscriber of the user's partition
    sees)."""
    firsts: dict[tuple[str, str], list[int]] = defaultdict(list)
    seen: set[str] = set()
    for rec in sorted(live, key=lambda r: (r.partition, r.offset)):
        data = orjson.loads(rec.value or b"")
        if data["event_id"] in seen:
            continue
        seen.add(data["event_id"])
        firsts[data["user_id"], data["lifetime_start"]].append(int(data["seq"]))
    bad = [
        f"{user} (lifetime {life}): first occurrences in the order {seqs[:12]}"
        for (user, life), seqs in sorted(firsts.items())
        if seqs != sorted(seqs)
    ]
    verdict.check("per user, first occurrences of tier changes in seq order", bad)


def dead_letters(
    verdict: Verdict,
    live: Sequence[InputRecord],
    expected: Mapping[tuple[int, int], str],
) -> Counter[str]:
    """The DLQ holds exactly the ``expected`` records ((partition, offset) -> reason),
    each with that reason. Returns the reasons found, counted once per record."""
    got: dict[tuple[int, int], str] = {}
    for rec in live:
        data = orjson.loads(rec.value or b"")
        got[(data["source_partition"], data["source_offset"])] = data["reason"]
    missing = [
        f"p{p}@{o} ({r}): not in the DLQ"
        for (p, o), r in sorted(expected.items())
        if (p, o) not in got
    ]
    verdict.check("every bad record is in the DLQ", missing, len(missing))
    wrong = [
        f"p{p}@{o}: reason {got[(p, o)]!r}, expected {r!r}"
        for (p, o), r in sorted(expected.items())
        if (p, o) in got and got[(p, o)] != r
    ]
    verdict.check("every dead letter has the reason of its defect", wrong, len(wrong))
    extra = [
        f"p{p}@{o} ({r}): dead-lettered, not a bad record"
        for (p, o), r in sorted(got.items())
        if (p, o) not in expected
    ]
    verdict.check("no valid record is dead-lettered", extra, len(extra))
    return Counter(got.values())


def offsets_done(
    verdict: Verdict,
    end: Mapping[int, int],
    applied: Mapping[int, int],
    outbox: Mapping[int, int],
    committed: Mapping[int, int | None],
) -> None:
    """At the end: every partition applied to its last offset, committed past it, and
    its outbox empty."""
    bad = []
    for p, e in sorted(end.items()):
        if applied.get(p, -1) != e - 1:
            bad.append(f"p{p}: applied offset {applied.get(p)}, last offset {e - 1}")
        if committed.get(p) != e:
            bad.append(f"p{p}: committed {committed.get(p)}, end offset {e}")
        if outbox.get(p):
            bad.append(f"p{p}: {outbox[p]} outbox entries never published")
    verdict.check("all input applied, committed, outboxes empty", bad)


def no_crash(verdict: Verdict, crashes: Sequence[Any], stops: Mapping[str, int | None]) -> None:
    """No instance exited on its own, and each stopped cleanly on SIGTERM (exit 0)."""
    bad = [
        f"{c.instance} #{c.start} exited rc={c.returncode}: {crash_summary(c.tail)}"
        for c in crashes
    ]
    bad += [f"{name}: exit status {code} on SIGTERM" for name, code in stops.items() if code != 0]
    verdict.check("no instance crashed; each stopped cleanly on SIGTERM", bad)


def crash_summary(tail: Sequence[str]) -> str:
    """The exception a process died of and where: its last line, the innermost frame in
    the service's code, and the frame that raised it.

    >>> crash_summary(['Traceback (most recent call last):',
    ...   '  File "/r/consumer/service/loop.py", line 9, in run', '    x()',
    ...   '  File "/v/site-packages/kafka/c.py", line 3, in commit', '    raise E',
    ...   'kafka.E: boom'])
    'kafka.E: boom (in consumer/service/loop.py:9 run; raised at kafka/c.py:3 commit)'
    """
    lines = [line.strip() for line in tail if line.strip()]
    frames = [m for line in lines if (m := re.match(r'File "(.+)", line (\d+), in (\S+)', line))]
    if not frames:
        return " | ".join(lines[-3:])[-400:]

    def show(m: re.Match[str]) -> str:
        path = m.group(1)
        for root in ("/consumer/", "/online_models/", "/schemas/", "/site-packages/"):
            if root in path:
                path = (
                    path.split(root, 1)[1]
                    if root == "/site-packages/"
                    else root[1:] + path.split(root, 1)[1]
                )
                break
        return f"{path}:{m.group(2)} {m.group(3)}"

    ours = [m for m in frames if "/consumer/" in m.group(1) and "site-packages" not in m.group(1)]
    where = f"in {show(ours[-1])}; " if ours and ours[-1] is not frames[-1] else ""
    return f"{lines[-1][:300]} ({where}raised at {show(frames[-1])})"


def readiness(
    verdict: Verdict,
    samples: Sequence[tuple[float, str, int, str]],
    outages: Sequence[tuple[float, float, str]],
    *,
    detect_s: float,
    recover_s: float,
    end: float,
) -> None:
    """/readyz tells the truth: during each outage (start, end, what), after ``detect_s``
    to notice it, no instance says ready; after it, each running instance says ready
    again within ``recover_s``. Samples: (t, instance, start#, status)."""
    bad: list[str] = []
    for t0, t1, what in outages:
        lying = [
            (t, name)
            for t, name, _, status in samples
            if t0 + detect_s <= t <= t1 and status == "ready"
        ]
        if lying:
            bad.append(
                f"{what}: {len(lying)} 'ready' answers while down "
                f"(from {lying[0][1]} at +{lying[0][0] - t0:.1f}s into a {t1 - t0:.1f}s outage)"
            )
        noticed = [s for s in samples if t0 <= s[0] <= t1 and s[3] != "ready"]
        if not noticed:
            bad.append(f"{what}: no instance ever said 'not ready' during the outage")
        later = [s for s in samples if t1 <= s[0] <= min(end, t1 + recover_s)]
        names = {s[1] for s in samples if s[0] >= t1}
        for name in sorted(names):
            if not any(s[1] == name and s[3] == "ready" for s in later):
                bad.append(f"{what}: {name} not ready within {recover_s:.0f}s after the outage")
    verdict.check("/readyz false during each outage, true after", bad)
