"""k is chosen by the silhouette on the customers' traits: three well-separated kinds of
customer end with three segments, each profiled and labelled, ids following the value
axis; also when the three kinds come from the generator, through the replay, with every
momentary feature (the short windows, the recencies) moving as it does in a stream."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from consumer.cli import main
from consumer.demo.customer_types import SEPARATED_PROFILES
from consumer.demo.quality import adjusted_rand_index
from consumer.demo.synthetic import GeneratorConfig, generate, truth
from consumer.service.errors import ModelUnreadable
from consumer.service.model_files import stored_model
from consumer.service.records import InputRecord
from consumer.service.tier_config import DEFAULT_TIERS_FILE, load_engine
from consumer.tools.replay import replay
from online_models.feature_vector import FEATURE_NAMES, vector
from online_models.global_model import GlobalModel
from online_models.merge import MergePolicy
from online_models.online import OnlineModels
from online_models.segment_traits import INPUTS
from online_models.state_codec import decode_state

#: Per kind: events and purchases in the last year, order value, days since the first
#: event (a browser, an occasional small buyer, a big spender).
KINDS = ((300.0, 0.0, 0.0, 200.0), (40.0, 15.0, 15.0, 250.0), (500.0, 120.0, 400.0, 300.0))


def _vector(rng: np.random.Generator, kind: tuple[float, ...]) -> list[float]:
    """A user of ``kind`` at a random moment: the trait inputs near the kind's (a
    lognormal spread) and the value axis's features as the kind's year says, every other
    feature drawn at random, far apart."""
    x = rng.normal(0.0, 3.0, len(FEATURE_NAMES))
    for name, value in zip(INPUTS, kind, strict=True):
        x[FEATURE_NAMES.index(name)] = math.log1p(value * rng.lognormal(0.0, 0.2))
    _, purchases, order_value, _ = kind
    x[FEATURE_NAMES.index("expected_per_year_log")] = math.log1p(purchases)
    x[FEATURE_NAMES.index("aov_weighted_log")] = math.log1p(order_value)
    return [float(v) for v in x]


def test_three_well_separated_kinds_end_with_k_3_and_labelled_profiles() -> None:
    rng = np.random.default_rng(3)
    policy = MergePolicy(
        every_samples=400, min_init_samples=400, n_segments=5, choose_every_versions=4
    )
    models = OnlineModels(GlobalModel.initial(FEATURE_NAMES), policy)
    for i in range(8000):
        x = _vector(rng, KINDS[i % 3])
        models.learn_sample(x)
        models.learn_label(x, {0: float(i % 2)}, 0.5)
    model = models.model
    assert len(model.centroids) == 3, model.silhouette
    assert model.silhouette is not None and model.silhouette > 0.8
    assert [p["segment"] for p in model.profiles] == [0, 1, 2]
    assert all(p["label"] and 0.2 < p["share"] < 0.45 for p in model.profiles)
    # ordered by value: the browsers lowest, the big spenders highest
    assert [model.score(_vector(rng, kind)).segment for kind in KINDS] == [0, 1, 2]
    # the chosen k survives a round trip, as `tierstream model export` writes it
    again = GlobalModel.from_json(model.to_json())
    assert again == model and len(again.to_json()["segments"]["centroids"]) == 3


def _replayed(tmp_path: Path, users: int, events: int, seed: int) -> tuple[GlobalModel, float]:
    """The model after replaying a stream of the generator's three separated types, and
    the adjusted Rand index of the users' final segments against their types. k is
    evaluated every 5 versions of 500 samples (the defaults, 20 of 2,000, would evaluate
    it once or never on a stream this small)."""
    tiers = tmp_path / "tiers.toml"
    text = DEFAULT_TIERS_FILE.read_text(encoding="utf-8")
    for old, new in (
        ("choose_segments_every_versions = 20", "choose_segments_every_versions = 5"),
        ("merge_every_samples = 2000", "merge_every_samples = 500"),
        ("min_init_samples = 1000", "min_init_samples = 500"),
    ):
        assert old in text
        text = text.replace(old, new)
    tiers.write_text(text, encoding="utf-8")
    config = GeneratorConfig(users=users, events=events, seed=seed, profiles=SEPARATED_PROFILES)
    records = [
        InputRecord("in", 0, i, None, r.key, r.value) for i, r in enumerate(generate(config))
    ]
    engine = load_engine(tiers)
    _, store = replay(records, engine)
    model = engine.models.model
    states = {user: decode_state(raw) for user, raw in store.users.items()}
    end = max(s.features.last_ms for s in states.values())
    kinds = {t["user_id"]: t["type"] for t in truth(config)}
    segments = [str(model.score(vector(s.features, end)).segment) for s in states.values()]
    return model, adjusted_rand_index([kinds[u] for u in states], segments)


def test_three_separated_generator_types_end_with_k_3_through_the_replay(tmp_path: Path) -> None:
    model, ari = _replayed(tmp_path, 300, 30_000, seed=4)
    assert len(model.centroids) == 3, (model.silhouette, model.profiles)
    assert model.silhouette is not None and model.silhouette > 0.6
    assert ari > 0.7, ari


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5, 6, 7])
@pytest.mark.parametrize(("users", "events"), [(300, 30_000), (1000, 100_000)])
def test_three_separated_types_end_with_k_3_across_seeds_and_sizes(
    tmp_path: Path, users: int, events: int, seed: int
) -> None:
    model, ari = _replayed(tmp_path, users, events, seed)
    assert len(model.centroids) == 3, (model.silhouette, model.profiles)
    assert ari > 0.7, ari


def test_the_command_line_generates_the_three_separated_types(tmp_path: Path) -> None:
    out, kinds = tmp_path / "events.jsonl", tmp_path / "types.jsonl"
    argv = ["generate", "--types", "separated", "--users", "30", "--events", "900"]
    assert main([*argv, "--out", str(out), "--truth-out", str(kinds)]) == 0
    types = {orjson.loads(line)["type"] for line in kinds.read_bytes().splitlines()}
    assert types == {p.name for p in SEPARATED_PROFILES}
    assert len(out.read_bytes().splitlines()) == 900
    assert main([*argv, "--purchases-only", "--out", str(out)]) == 2  # a clickstream option


def test_a_model_whose_segments_are_of_all_features_is_refused() -> None:
    """A v3 model (centroids of the 29 standardised features) stops the service with one
    line saying how to replace it; a v4 body with such centroids is malformed."""
    base = GlobalModel.initial(FEATURE_NAMES).replace(
        centroids=((0.0, 0.0, 0.0), (1.0, 2.0, 3.0)), centroid_counts=(1.0, 1.0)
    )
    body = base.to_json()
    del body["name"]
    body["segments"] = {"centroids": [[0.0] * len(FEATURE_NAMES)] * 2, "counts": [1.0, 1.0]}
    with pytest.raises(ModelUnreadable, match=r"tierstream\.model\.v3.*tierstream model fit"):
        stored_model(orjson.dumps({**body, "schema": "tierstream.model.v3"}))
    with pytest.raises(ValueError, match="centroids are not of the traits"):
        GlobalModel.from_json(body)
    assert GlobalModel.from_json(base.to_json()) == base


def test_one_vectors_traits_are_the_batch_traits_to_the_bit() -> None:
    """A learning sample's traits (:meth:`SegmentTraits.one`, no numpy) are the floats
    :meth:`SegmentTraits.of` gives, also at 0, -0.0, below 0 and NaN, so the segments
    learn what they learnt before."""
    from online_models.segment_traits import SegmentTraits

    traits = SegmentTraits(FEATURE_NAMES)
    rng = np.random.default_rng(8)
    rows = [_vector(rng, KINDS[i % 3]) for i in range(3000)]
    rows += [[float(v) for v in rng.normal(0.0, 4.0, len(FEATURE_NAMES))] for _ in range(3000)]
    for special in (0.0, -0.0, -1e-300, math.nan, math.inf, -math.inf, 1e-12, 800.0, -2.0):
        for name in INPUTS:
            row = [0.5] * len(FEATURE_NAMES)
            row[FEATURE_NAMES.index(name)] = special
            rows.append(row)
    with np.errstate(all="ignore"):
        batch = traits.of(rows).tolist()
    for row, expected in zip(rows, batch, strict=True):
        got = traits.one(row)
        assert [math.copysign(1.0, v) for v in got] == [math.copysign(1.0, v) for v in expected]
        assert np.array_equal(got, expected, equal_nan=True), (row, got, expected)
