"""What the re-scores of silent users decide: a replay of a JSONL file with every timer
that re-scores a user counted by how long the user had been silent, and the tier
changes those re-scores gave (docs/performance.md, "What the silent users' re-scores
decide").

The replay is ``tierstream replay``'s (the packaged tier config, a memory state store,
batches of ``--batch-size`` records); only the engine's pass is wrapped, to see each
re-score's silence and, once the pass has taken its decisions, whether it changed the
user's tier. A timer that ends a lifetime is not a re-score and is not counted.

    python -m tests.bench.silent_fires sparse40k.jsonl

>>> import io
>>> from consumer.demo.synthetic import GeneratorConfig, generate
>>> stream = generate(GeneratorConfig(users=20, events=200, days=120, seed=3, bad_fraction=0.0))
>>> records = list(jsonl_records(io.BytesIO(b"\\n".join(r.value for r in stream)), "events"))
>>> tally = silent_fires(records)
>>> tally.rescores > 0 and sum(tally.by_silence.values()) == tally.rescores
True
>>> tally.changes == sum(tally.changes_by_silence.values()) <= tally.rescores
True
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from consumer.service.records import InputRecord, OutputRecord
from consumer.service.state_store import MemoryStateStore
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import Replay
from consumer.tools.sources import jsonl_records
from online_models.engine import Decision, EnginePass, TierEngine
from online_models.user_state import UserState

DAY_MS = 86_400_000
#: Silences are counted in bins of this many days, the last bin open-ended.
BIN_DAYS = 7
LAST_BIN_DAYS = 364


@dataclass
class SilentFires:
    """Re-scores of silent users by silence (days, the bin's start) and their changes."""

    events: int = 0
    #: Output records by topic (tier changes, current tiers, dead letters).
    outputs: Counter[str] = field(default_factory=Counter)
    by_silence: Counter[int] = field(default_factory=Counter)
    changes_by_silence: Counter[int] = field(default_factory=Counter)

    @property
    def rescores(self) -> int:
        return sum(self.by_silence.values())

    @property
    def changes(self) -> int:
        return sum(self.changes_by_silence.values())


class _CountingPass(EnginePass):
    """An engine pass that notes each re-score's silence and, after :meth:`finish`,
    whether its decision changed the tier."""

    def __init__(self, engine: TierEngine, tally: SilentFires) -> None:
        super().__init__(engine)
        self._tally = tally
        self._fired: list[tuple[int, Decision]] = []

    def fire(self, state: UserState, user_id: str, now_ms: int, *, emitted_at_ms: int) -> Decision:
        silence = (now_ms - state.features.last_ms) // DAY_MS
        days = min(silence // BIN_DAYS * BIN_DAYS, LAST_BIN_DAYS)
        self._tally.by_silence[days] += 1
        decision = super().fire(state, user_id, now_ms, emitted_at_ms=emitted_at_ms)
        self._fired.append((days, decision))
        return decision

    def finish(self) -> None:
        super().finish()
        for days, decision in self._fired:
            if decision.change is not None:
                self._tally.changes_by_silence[days] += 1
        self._fired = []


def silent_fires(records: Sequence[InputRecord], batch_size: int = 2000) -> SilentFires:
    """Replay ``records`` from an empty store and count its re-scores of silent users."""
    tally = SilentFires(events=len(records))
    engine = load_engine(DEFAULT_TIERS_FILE)
    engine.batch = lambda: _CountingPass(engine, tally)  # type: ignore[method-assign]

    def emit(output: OutputRecord) -> None:
        tally.outputs[output.topic] += 1

    replay = Replay(engine, MemoryStateStore(), emit=emit, batch_size=batch_size, check_keys=False)
    replay.run(records)
    return tally


def table(tally: SilentFires) -> str:
    """The tally as a Markdown table, a row per silence bin."""
    lines = [
        "| silent for (days) | re-scores | share (cumulative) | tier changes "
        "| changes per 1,000 re-scores |",
        "| --- | --- | --- | --- | --- |",
    ]
    total, seen = max(1, tally.rescores), 0
    for days in sorted(tally.by_silence):
        n, changes = tally.by_silence[days], tally.changes_by_silence[days]
        seen += n
        span = f"{days}+" if days >= LAST_BIN_DAYS else f"{days}-{days + BIN_DAYS - 1}"
        lines.append(
            f"| {span} | {n:,} | {n / total:.1%} ({seen / total:.0%}) | {changes:,} "
            f"| {1000 * changes / max(1, n):.1f} |"
        )
    lines.append(
        f"| all | {tally.rescores:,} | | {tally.changes:,} | {1000 * tally.changes / total:.1f} |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path, help="a JSONL file of input events")
    ap.add_argument("--batch-size", type=int, default=2000, help="records per batch")
    args = ap.parse_args(argv)
    with args.file.open("rb") as fh:
        records = list(jsonl_records(fh, "events"))
    tally = silent_fires(records, args.batch_size)
    print(
        f"{args.file}: {tally.events:,} records; outputs "
        f"{', '.join(f'{topic} {n:,}' for topic, n in sorted(tally.outputs.items()))}; "
        f"{tally.rescores:,} re-scores of silent users gave {tally.changes:,} tier changes"
    )
    print(table(tally))
    return 0


if __name__ == "__main__":
    sys.exit(main())
