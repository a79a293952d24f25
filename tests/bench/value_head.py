"""What a non-linear value head would give on the order export (issue 11's one missed
figure: the top 20% of the customers by ``expected_value`` should hold 0.02 more of the
next 180 days' revenue than BG/NBD's top 20%).

The spend head (``spend_180d``, a Poisson GLM on the 29-number feature vector) learns
each model version from the labelled snapshots that resolved since the previous one,
forgetting a little of the older ones at each version. This module replays the order
export to T as ``make bench-models`` does (the order config, in memory), keeps every
labelled row the spend head learnt (the raw vector and the 180-day spend), and fits other
learners to exactly those rows: what the head could have been with the same data,
nothing the stream did not show by T. Each is applied to every customer's vector at T
and judged as the bench judges ``expected_value`` (its ``capture``):

- a Poisson GLM of all the rows at once, and of the newest 20,000 (the head's form,
  without its forgetting);
- gradient boosting with a Poisson loss (scikit-learn, the ``bench`` extra) of the same
  rows: a learner that forms interactions and thresholds, fitted in batch;
- River's Aggregated Mondrian Forest and Hoeffding adaptive tree, learning the rows one at
  a time in the order they resolved: the non-linear learners of the package the product
  is built on.

It reads the ``orders.jsonl`` an earlier ``python -m tests.bench.bench_models --only
orders --work DIR`` left in ``DIR`` (about 2 minutes: the replay, then River's forest)::

    nice -n 10 .venv/bin/python -m tests.bench.value_head --work DIR

>>> rows = [np.array([[4.0, 2.0, 0.1], [0.0, 1.0, 0.2]]), np.array([[4.0, 0.0, 0.3]])]
>>> head_rows(rows, head=4).tolist()
[[0.1, 2.0], [0.3, 0.0]]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import online_models.online
from online_models.feature_vector import FEATURE_NAMES, vector
from online_models.features import DAY_MS, UserFeatures
from online_models.global_model import GlobalModel
from online_models.merge import MergePolicy, merge
from tests.bench.bench_models import (
    ORDER_HOLDOUT_MS,
    PUBLISHED_SEED,
    bgnbd,
    capture,
    is_customer,
    order_export,
    purchase_log_tiers,
    read_lines,
)
from tests.bench.revenue_ceiling import fit_predict

#: The spend head's place in the model's heads (``TierEngine``'s order).
SPEND_HEAD = 4
#: The newest rows a bounded learner would keep.
NEWEST = 20_000


def head_rows(labelled: Sequence[np.ndarray], head: int) -> np.ndarray:
    """The rows one head learnt, in order, from the versions' labelled blocks (each row:
    head index, label, raw vector): the vector, then the label."""
    rows = [b[b[:, 0] == head] for b in labelled if len(b)]
    if not rows:
        return np.zeros((0, 0))
    block = np.vstack(rows)
    return np.hstack([block[:, 2:], block[:, 1:2]])


def replay_rows(events: Path, until: int, tiers: Path, snap: Path) -> list[np.ndarray]:
    """Replay ``events`` to ``until`` in this process (``tierstream replay``), writing the
    snapshot to ``snap``; every version's labelled rows, in the order learnt."""
    from consumer.cli import main

    learnt: list[np.ndarray] = []
    # The model's versions are made by `online_models.online`'s `merge`: wrapped there.
    names = vars(online_models.online)

    def recording(
        base: GlobalModel, contributions: Sequence[dict[str, Any]], p: MergePolicy
    ) -> GlobalModel:
        # A contribution's labelled rows are as the merge learns them (settling its queued
        # samples moves the segments and the scaler, not these).
        mine = [c for c in contributions if c.get("base") == base.name]
        rows = [r for c in mine for r in c["labelled"]]
        learnt.append(np.array(rows, dtype=float).reshape(len(rows), len(FEATURE_NAMES) + 2))
        return merge(base, contributions, p)

    os.environ["TIERSTREAM_TIERS_FILE"] = str(tiers)
    names["merge"] = recording
    try:
        main(["replay", str(events), "--until", str(until), "--quiet", "--snapshot-out", str(snap)])
    finally:
        names["merge"] = merge
    return learnt


def learners() -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]]:
    """Name -> fit(rows' vectors, labels) and predict at T's vectors."""
    from river import forest, preprocessing, tree
    from sklearn.linear_model import PoissonRegressor
    from sklearn.preprocessing import StandardScaler

    def glm(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
        s = StandardScaler().fit(x)
        m = PoissonRegressor(alpha=1e-4, max_iter=3000).fit(s.transform(x), y)
        out: np.ndarray = m.predict(s.transform(at))
        return out

    def gbm(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
        return fit_predict([(x, y)], at)  # the revenue ceiling's boosting, on these rows

    def river(make: Callable[[], Any]) -> Callable[[np.ndarray, np.ndarray, np.ndarray], Any]:
        def fit(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
            m = make()
            for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
                m.learn_one(dict(zip(FEATURE_NAMES, xi, strict=True)), yi)
            rows = (dict(zip(FEATURE_NAMES, v, strict=True)) for v in at.tolist())
            return np.array([m.predict_one(r) for r in rows])

        return fit

    return {
        "Poisson GLM, every row (the head's form, no forgetting)": glm,
        f"Poisson GLM, the newest {NEWEST:,} rows": lambda x, y, at: glm(
            x[-NEWEST:], y[-NEWEST:], at
        ),
        "gradient boosting (Poisson loss), every row": gbm,
        f"gradient boosting (Poisson loss), the newest {NEWEST:,} rows": lambda x, y, at: gbm(
            x[-NEWEST:], y[-NEWEST:], at
        ),
        "River AMFRegressor (10 trees), row by row": river(
            lambda: forest.AMFRegressor(n_estimators=10, seed=1)
        ),
        "River HoeffdingAdaptiveTreeRegressor, row by row": river(
            lambda: (
                preprocessing.StandardScaler()
                | tree.HoeffdingAdaptiveTreeRegressor(grace_period=200, seed=1)
            )
        ),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="bench_models' --work directory")
    ap.add_argument("--seed", type=int, default=PUBLISHED_SEED, help="the export's seed")
    args = ap.parse_args()
    t0 = time.perf_counter()
    os.environ.setdefault("TIERSTREAM_MIN_EVENT_TIME", "1990-01-01T00:00:00Z")
    _, path, purchases, until = order_export(args.work, args.seed, False, write=False)
    with tempfile.TemporaryDirectory() as tmp:
        snap_path = Path(tmp) / "orders.snap"
        learnt = replay_rows(path, until, purchase_log_tiers(Path(tmp)), snap_path)
        lines = read_lines(snap_path)
    rows = head_rows(learnt, SPEND_HEAD)
    x, y = rows[:, :-1], rows[:, -1]
    users = sorted(u for u, line in lines.items() if is_customer(line))
    at = np.array([vector(UserFeatures.from_json(lines[u]["features"]), until) for u in users])
    _, revenue = purchases.window(until, until + ORDER_HOLDOUT_MS)
    rev = np.array([revenue.get(u, 0.0) for u in users])
    online = np.array([lines[u]["expected_value"] or 0.0 for u in users])
    reference = capture(rev, bgnbd(purchases, until, users, ORDER_HOLDOUT_MS / DAY_MS)[1])
    print(
        f"{len(users):,} customers at T (seed {args.seed}); the spend head learnt "
        f"{len(y):,} labelled rows in {len(learnt)} versions up to T\n"
    )
    print("| ranking by | top-20% revenue | vs BG/NBD |\n| --- | --- | --- |")
    print(f"| BG/NBD + Gamma-Gamma (the reference) | {reference:.3f} | |")
    print(
        f"| tierstream `expected_value` (online) | {capture(rev, online):.3f} | "
        f"{capture(rev, online) - reference:+.3f} |"
    )
    for name, fit in learners().items():
        score = capture(rev, fit(x, y, at))
        print(f"| {name} | {score:.3f} | {score - reference:+.3f} |", flush=True)
    print(f"\n(target: BG/NBD + 0.02 = {reference + 0.02:.3f}; {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
