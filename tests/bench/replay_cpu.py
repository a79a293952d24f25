"""The CPU a replay of a JSONL file takes in this process, with a digest of everything it
publishes: the yardstick of a change to the engine or the codec that must leave every
output the same (docs/performance.md quotes it).

The file is read once; each run replays it from scratch (a new engine with the packaged
tier config, a memory state store, batches of ``--batch-size`` records, as ``tierstream
replay`` does) and the fastest run's CPU seconds count (the machine is shared: a wait
for the CPU is no cost). Every output record's value goes into one SHA-256, so two
commits that publish the same bytes print the same digest. Compare two commits by
running it in a checkout of each (``git worktree add``), alternately.

    python -m tests.bench.replay_cpu sparse40k.jsonl --runs 3

>>> import io
>>> from consumer.demo.synthetic import GeneratorConfig, generate
>>> stream = generate(GeneratorConfig(users=5, events=200, seed=3, bad_fraction=0.0))
>>> records = list(jsonl_records(io.BytesIO(b"\\n".join(r.value for r in stream)), "events"))
>>> first, second = replay_cpu(records), replay_cpu(records)
>>> first.digest == second.digest and first.outputs == second.outputs > 0
True
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from consumer.service.gc_settings import settle_collector
from consumer.service.records import InputRecord, OutputRecord
from consumer.service.state_store import MemoryStateStore
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import Replay
from consumer.tools.sources import jsonl_records


@dataclass(frozen=True)
class ReplayCpu:
    """One replay: its CPU seconds, the outputs it published and their digest."""

    cpu_s: float
    outputs: int
    digest: str


def replay_cpu(records: Sequence[InputRecord], batch_size: int = 2000) -> ReplayCpu:
    """Replay ``records`` once, from an empty store, timing only the replay."""
    digest = hashlib.sha256()
    outputs = 0

    def emit(output: OutputRecord) -> None:
        nonlocal outputs
        outputs += 1
        digest.update(output.value or b"")

    engine = load_engine(DEFAULT_TIERS_FILE)
    replay = Replay(engine, MemoryStateStore(), emit=emit, batch_size=batch_size, check_keys=False)
    start = time.process_time()
    replay.run(records)
    return ReplayCpu(time.process_time() - start, outputs, digest.hexdigest()[:16])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path, help="a JSONL file of input events")
    ap.add_argument("--runs", type=int, default=3, help="replays; the fastest counts")
    ap.add_argument("--batch-size", type=int, default=2000, help="records per batch")
    args = ap.parse_args(argv)
    with args.file.open("rb") as fh:
        records = list(jsonl_records(fh, "events"))
    settle_collector()
    runs = [replay_cpu(records, args.batch_size) for _ in range(args.runs)]
    best = min(runs, key=lambda r: r.cpu_s)
    digests = {r.digest for r in runs}
    if len(digests) != 1:
        print(f"{args.file}: the runs published different bytes: {sorted(digests)}")
        return 1
    per_record = best.cpu_s / max(1, len(records)) * 1e6
    print(
        f"{args.file}: {len(records):,} records, {best.outputs:,} outputs (sha256 {best.digest}); "
        f"CPU {', '.join(f'{r.cpu_s:.2f}' for r in runs)} s: min {best.cpu_s:.3f} s, "
        f"{per_record:.1f} µs a record"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
