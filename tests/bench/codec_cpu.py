"""What encoding and decoding a user's state costs in CPU, per state, over the states a
replay actually saves (docs/performance.md, "User state in Redis").

A JSONL file of input events is replayed in memory (the service's batch step, as
``tierstream replay`` runs it); every state a batch saves is kept, and up to
``--sample`` of them, evenly spread over the run, are encoded and decoded: the binary
form (:mod:`online_models.state_codec`) and, for scale, orjson's JSON of the same state
(``orjson.dumps(state.to_json())`` and ``UserState.from_json(orjson.loads(raw))``).
Min of ``--repeat`` passes, CPU microseconds per state (a decode leaves out what a
state made again later costs: a vector the stored form left out is computed when it is
needed). Then the compression alone, by quarter of the packed bodies' sizes: what a
state's bytes cost it, with the compressor the code writes (Zstandard and the packaged
dictionary, formats 4 and 5) and with the raw deflate of the earlier formats 2 and 3.

    python -m tests.bench.codec_cpu /work/perf/sparse10k.jsonl [--sample 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from consumer.service.records import InputRecord
from consumer.service.state_store import MemoryStateStore
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import Replay
from consumer.tools.sources import jsonl_records
from online_models import state_codec, state_compression
from online_models.state_codec import decode_state, encode_state
from online_models.user_state import UserState


def saved_states(records: Iterable[InputRecord], batch_size: int = 2000) -> list[bytes]:
    """Every state a replay of ``records`` saves, in the order its batches save them
    (records not keyed by their user, as ``tierstream replay`` reads a file)."""
    store = MemoryStateStore()
    last: dict[str, bytes] = {}
    saved: list[bytes] = []

    def collect(*_: object) -> None:
        for user, raw in store.users.items():
            if last.get(user) != raw:
                last[user] = raw
                saved.append(raw)

    engine = load_engine(DEFAULT_TIERS_FILE)
    Replay(
        engine,
        store,
        emit=lambda _: None,
        on_batch=collect,
        batch_size=batch_size,
        check_keys=False,
    ).run(records)
    return saved


def per_state_us(states: list[UserState], repeat: int) -> dict[str, float]:
    """Encode and decode per state, binary and JSON, min of ``repeat`` passes (µs)."""
    binary = [encode_state(s) for s in states]
    texts = [orjson.dumps(s.to_json()) for s in states]

    def best(f: Callable[[], Any]) -> float:
        # CPU time, not wall time: the machine is shared, and a wait for the CPU is no cost.
        fastest = min(timeit.repeat(f, number=1, repeat=repeat, timer=time.process_time))
        return fastest / len(states) * 1e6

    return {
        "binary encode": best(lambda: [encode_state(s) for s in states]),
        "binary decode": best(lambda: [decode_state(r) for r in binary]),
        "json encode": best(lambda: [orjson.dumps(s.to_json()) for s in states]),
        "json decode": best(lambda: [UserState.from_json(orjson.loads(t)) for t in texts]),
    }


def packed_bodies(saved: Iterable[bytes]) -> list[bytes]:
    """The bodies of the packed states among ``saved`` (any packed format), decompressed
    (what the encoder compresses)."""
    return [body for body in map(state_codec.packed_body, saved) if body is not None]


def deflate(body: bytes) -> bytes:
    """A body as formats 2 and 3 stored it: raw deflate, level 1, a 2 KiB window."""
    d = zlib.compressobj(1, zlib.DEFLATED, -11, 6)
    return d.compress(body) + d.flush()


def compression_by_size(
    bodies: list[bytes], repeat: int, compress: Callable[[bytes], bytes]
) -> list[tuple[float, float, float]]:
    """Per quarter of ``bodies`` by size: (mean bytes in, mean bytes out, µs a call of
    ``compress``), min of ``repeat`` passes."""
    ordered = sorted(bodies, key=len)
    q = len(ordered) // 4
    rows = []
    for part in (ordered[i * q : (i + 1) * q] for i in range(4)):
        size = sum(map(len, part)) / len(part)
        out = sum(len(compress(b)) for b in part) / len(part)
        rows.append((size, out, us_each(compress, part, repeat)))
    return rows


def us_each(call: Callable[[bytes], bytes], items: list[bytes], repeat: int) -> float:
    """CPU µs of ``call`` on each of ``items``, min of ``repeat`` passes."""
    fastest = min(
        timeit.repeat(
            lambda: [call(b) for b in items], number=1, repeat=repeat, timer=time.process_time
        )
    )
    return fastest / len(items) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path, help="a JSONL file of input events")
    ap.add_argument("--sample", type=int, default=5000, help="states measured (evenly spread)")
    ap.add_argument("--repeat", type=int, default=5, help="passes; the fastest counts")
    args = ap.parse_args(argv)
    with args.file.open("rb") as fh:
        saved = saved_states(jsonl_records(fh, "events"))
    step = max(1, len(saved) // args.sample)
    states = [decode_state(raw) for raw in saved[::step][: args.sample]]
    us = per_state_us(states, args.repeat)
    binary, json = us["binary encode"] + us["binary decode"], us["json encode"] + us["json decode"]
    print(f"{args.file}: {len(saved):,} states saved, {len(states):,} measured")
    print(f"  stored bytes a state: {sum(map(len, saved)) / len(saved):,.0f} (mean of all saved)")
    for name, value in us.items():
        print(f"  {name}: {value:.1f} µs")
    print(f"  binary {binary:.1f} µs, JSON {json:.1f} µs per state: {binary / json:.2f}x")
    bodies = packed_bodies(saved[::step][: args.sample])
    if len(bodies) >= 4:
        print(f"  the {len(bodies):,} packed bodies compressed, by quarter of their size:")
        now = compression_by_size(bodies, args.repeat, state_compression.compress)
        then = compression_by_size(bodies, args.repeat, deflate)
        for (size, out, us_each), (_, d_out, d_us) in zip(now, then, strict=True):
            print(
                f"    {size:,.0f} -> {out:,.0f} bytes in {us_each:.1f} µs"
                f" (deflate, formats 2 and 3: {d_out:,.0f} bytes in {d_us:.1f} µs)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
