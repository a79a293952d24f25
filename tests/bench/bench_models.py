"""`make bench-models`: how good the online models are, against offline references.

Generates a stream (default 20k users, 500k events), replays it through the same batch
step and commit protocol as the live service (memory state, one partition, learning on),
then compares:

- segments: the final global model's nearest-centroid segments of every user's final
  feature vector, against scikit-learn's KMeans fitted offline on the same vectors
  (adjusted Rand index), and against the generator's true customer types;
- propensity: every resolved snapshot (feature vector, "purchased within H days"), split
  in event-time order 70/30; the online model's AUC on the last 30% against an offline
  LogisticRegression fitted on the first 70%; plus the prequential AUC (each label scored
  with the prediction made before it was learned);
- stability: the share of users changing tier more than twice within 30 days.

Prints a Markdown table to paste into docs/models.md. scikit-learn is a test-only
dependency.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from consumer.demo.synthetic import GeneratorConfig, generate, truth
from consumer.service.records import InputRecord
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import replay
from online_models.feature_vector import vector
from online_models.features import DAY_MS
from online_models.global_model import GlobalModel
from online_models.user_state import UserState


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--tiers", type=Path, default=DEFAULT_TIERS_FILE, help="tier config file")
    ap.add_argument("--model-out", type=Path, help="write the final global model here")
    args = ap.parse_args()

    config = GeneratorConfig(users=args.users, events=args.events, seed=args.seed, days=args.days)
    t0 = time.perf_counter()
    records = [
        InputRecord("events", 0, i, None, r.key, r.value) for i, r in enumerate(generate(config))
    ]
    t_gen = time.perf_counter() - t0

    engine = load_engine(args.tiers)
    snapshots: list[tuple[list[float], bool, float, int]] = []
    learn_label = engine.models.learn_label

    def record_label(x: list[float], label: bool, predicted: float) -> None:
        snapshots.append((x, label, predicted, len(snapshots)))
        learn_label(x, label, predicted)

    engine.models.learn_label = record_label  # type: ignore[method-assign]
    t0 = time.perf_counter()
    outputs, store = replay(records, engine, batch_size=2000)
    t_replay = time.perf_counter() - t0
    assert store.model is not None, "no model version was built"
    model = GlobalModel.from_json(orjson.loads(store.model))
    if args.model_out:
        args.model_out.write_bytes(orjson.dumps(model.to_json(), option=orjson.OPT_INDENT_2))

    # -- segments --------------------------------------------------------------------
    end_ms = max(s["features"]["last_ms"] for s in map(orjson.loads, store.users.values()))
    users = sorted(store.users)
    x = np.array(
        [vector(UserState.from_json(orjson.loads(store.users[u])).features, end_ms) for u in users]
    )
    online_seg, _, _ = model.score_many(x)
    z = (x - np.array(model.mean)) / np.array(model.scale)
    offline = KMeans(n_clusters=len(model.centroids), n_init=10, random_state=0).fit(z)
    ari_offline = adjusted_rand_score(offline.labels_, online_seg)
    types = {t["user_id"]: t["type"] for t in truth(config)}
    true_types = [types[u] for u in users]
    ari_truth_online = adjusted_rand_score(true_types, online_seg)
    ari_truth_offline = adjusted_rand_score(true_types, offline.labels_)

    # -- propensity ------------------------------------------------------------------
    xs = np.array([s[0] for s in snapshots])
    ys = np.array([s[1] for s in snapshots])
    ps = np.array([s[2] for s in snapshots])
    cut = int(len(snapshots) * 0.7)
    scaler = StandardScaler().fit(xs[:cut])
    ref = LogisticRegression(max_iter=2000).fit(scaler.transform(xs[:cut]), ys[:cut])
    auc_offline = roc_auc_score(ys[cut:], ref.predict_proba(scaler.transform(xs[cut:]))[:, 1])
    _, _, p_online = model.score_many(xs[cut:])
    auc_online = roc_auc_score(ys[cut:], p_online)
    auc_prequential = roc_auc_score(ys, ps)

    # -- stability -------------------------------------------------------------------
    times: dict[str, list[int]] = defaultdict(list)
    for o in outputs:
        if o.topic == "user-tier-changes":
            c = orjson.loads(o.value)
            if c["previous_tier"] is not None:
                times[c["user_id"]].append(_ms(c["event_time"]))
    flappy = sum(1 for ts in times.values() if _max_in_window(sorted(ts), 30 * DAY_MS) > 2)
    changes = sum(len(ts) for ts in times.values())

    n_events = len(records)
    print("| measure | value |\n| --- | --- |", file=sys.stdout)
    rows = [
        ("stream", f"{args.users} users, {n_events} events, {args.days} days, seed {args.seed}"),
        (
            "model versions built",
            f"{model.version} ({model.samples_seen} samples, {model.labels_seen} labels)",
        ),
        ("ARI online segments vs offline KMeans (same final vectors)", f"{ari_offline:.3f}"),
        ("ARI online segments vs true types", f"{ari_truth_online:.3f}"),
        ("ARI offline KMeans vs true types", f"{ari_truth_offline:.3f}"),
        ("propensity snapshots (positive share)", f"{len(snapshots)} ({ys.mean():.1%})"),
        ("AUC online model, last 30% of snapshots", f"{auc_online:.4f}"),
        ("AUC offline LogisticRegression (fit on first 70%)", f"{auc_offline:.4f}"),
        ("AUC gap (offline - online)", f"{auc_offline - auc_online:+.4f}"),
        ("prequential AUC (all snapshots)", f"{auc_prequential:.4f}"),
        ("tier changes after the first tier", f"{changes}"),
        ("users with > 2 changes in 30 days", f"{flappy} ({flappy / len(users):.2%})"),
        (
            "replay throughput (1 core)",
            f"{n_events / t_replay:,.0f} events/s ({t_replay:.1f} s; generation {t_gen:.1f} s)",
        ),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    ok = ari_offline >= 0.8 and auc_offline - auc_online <= 0.02 and flappy / len(users) < 0.01
    print("targets met" if ok else "TARGETS MISSED", file=sys.stderr)
    return 0 if ok else 1


def _ms(text: str) -> int:
    from schemas.decode import parse_rfc3339_ms

    return parse_rfc3339_ms(text)


def _max_in_window(ts: list[int], span: int) -> int:
    best = 0
    for i, t in enumerate(ts):
        best = max(best, bisect.bisect_right(ts, t + span) - i)
    return best


if __name__ == "__main__":
    sys.exit(main())
