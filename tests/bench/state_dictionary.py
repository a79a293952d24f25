"""Trains the dictionary packed user states are compressed with
(:mod:`online_models.state_compression`), byte for byte as released, and says what it
buys on streams it was not trained on.

The training bodies are the packed bodies (before compression) of every state a replay
saves, in memory with the packaged tier config, of three of the generator's streams, seed
1207: a dense clickstream (2,000 users, 60,000 events over 30 days), a sparse one (5,000
users, 20,000 events over 180 days) and an order export (3,000 customers, purchases only,
730 days); every ``--every``-th body is kept. Zstandard's trainer is deterministic: the same
bodies and the same zstandard (0.25.0 when the packaged one was made) give the same bytes,
which ``--check`` compares with the packaged file. The dictionary is part of the state
format and never changes once released (a new one would be a new format): ``--out`` is for
that case, and for experiments.

It then compresses the bodies of streams of another seed (2024: a clickstream of 5,000
users, an order export of 3,000 customers) with it and with the raw deflate of the
earlier formats: bytes and CPU µs a body, min of 5 passes.

    python -m tests.bench.state_dictionary --check      # about a minute
    python -m tests.bench.state_dictionary --out /tmp/new.zdict

>>> train([bytes([i % 7]) * 64 + bytes(range(i % 50)) for i in range(400)], size=1024)[:4]
b'7\\xa40\\xec'
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import zstandard

from consumer.demo.orders import OrderConfig, generate_orders
from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.records import InputRecord
from online_models import state_compression
from online_models.state_codec import packed_body
from tests.bench.codec_cpu import deflate, saved_states, us_each

#: The dictionary's size: 2-16 KiB compress held-out bodies within 2% of each other.
SIZE = 8192
PACKAGED = Path(state_compression.__file__).with_name(state_compression.DICTIONARY_FILE)


def _records(values: Iterable[bytes]) -> Iterable[InputRecord]:
    return (InputRecord("in", 0, i, None, None, v) for i, v in enumerate(values))


def streams(seed: int, *, training: bool) -> dict[str, Iterable[bytes]]:
    """The generator's streams of ``seed``: the three of the training set, or the two
    held out."""
    if training:
        return {
            "dense": (r.value for r in generate(GeneratorConfig(2000, 60_000, seed, days=30))),
            "sparse": (r.value for r in generate(GeneratorConfig(5000, 20_000, seed, days=180))),
            "orders": (r.value for r in generate_orders(OrderConfig(3000, seed))),
        }
    return {
        "clickstream": (r.value for r in generate(GeneratorConfig(5000, 100_000, seed, days=90))),
        "orders": (r.value for r in generate_orders(OrderConfig(3000, seed))),
    }


def bodies(values: Iterable[bytes]) -> list[bytes]:
    """The packed bodies of every state a replay of ``values`` saves."""
    out = []
    for raw in saved_states(_records(values)):
        body = packed_body(raw)
        if body is not None:
            out.append(body)
    return out


def train(samples: list[bytes], size: int = SIZE) -> bytes:
    """A dictionary of ``size`` bytes trained on ``samples`` (one thread: deterministic)."""
    return zstandard.train_dictionary(size, samples, threads=0).as_bytes()


def training_set(every: int) -> list[bytes]:
    """Every ``every``-th body of the training streams."""
    out: list[bytes] = []
    for name, values in streams(1207, training=True).items():
        found = bodies(values)
        print(f"{name}: {len(found):,} bodies, {len(found[::every]):,} kept", file=sys.stderr)
        out += found[::every]
    return out


def held_out(trained: bytes) -> list[str]:
    """Table rows: the held-out streams' bodies, raw, deflated and compressed."""
    zstd = state_compression.compressor(state_compression.dictionary(trained)).compress
    rows = []
    for name, values in streams(2024, training=False).items():
        found = bodies(values)[::5][:5000]
        raw = sum(map(len, found)) / len(found)
        deflated = sum(len(deflate(b)) for b in found) / len(found)
        packed = sum(len(zstd(b)) for b in found) / len(found)
        rows.append(
            f"| {name} (seed 2024) | {len(found):,} | {raw:,.0f} | {deflated:,.0f} B, "
            f"{us_each(deflate, found, 5):.1f} µs | {packed:,.0f} B, "
            f"{us_each(zstd, found, 5):.1f} µs |"
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the dictionary here")
    ap.add_argument("--check", action="store_true", help="compare with the packaged one")
    ap.add_argument("--every", type=int, default=4, help="keep every n-th training body")
    args = ap.parse_args(argv)
    dictionary = train(training_set(args.every))
    digest = hashlib.sha256(dictionary).hexdigest()
    print(f"trained: {len(dictionary):,} bytes, SHA-256 {digest}")
    if args.out:
        args.out.write_bytes(dictionary)
        print(f"written to {args.out}")
    print("\n| held-out stream | bodies | raw bytes | deflate (formats 2, 3) | zstd + dictionary |")
    print("| --- | --- | --- | --- | --- |")
    for row in held_out(dictionary):
        print(row)
    if args.check:
        same = dictionary == PACKAGED.read_bytes()
        print(f"\nthe packaged {PACKAGED.name}: {'the same bytes' if same else 'DIFFERENT'}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
