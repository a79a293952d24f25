"""``tierstream model fit FILE``: a model version fitted from history, through the same
learners as the live service, to import before going live (a warm start).

The file (JSONL or CSV, as ``replay`` reads it) is replayed in memory with learning on,
once by default: the model is then the one a deployment that had read that history
online would hold, plus a last version made of what it learnt after its previous one
(which would otherwise wait for samples that never come). ``passes`` > 1 replays it
again, each pass from fresh user states and from the model the pass before ended with,
so the later passes score, snapshot and label the history with a trained model (on the
generated clickstream two passes scored the second half 0.0001 AUC worse than one:
docs/models.md, "Warm start"). The result is a model file for ``tierstream model
import`` (or ``TIERSTREAM_MODEL_FILE``, or ``replay --model``): a new deployment then
scores well from its first event instead of spending its first months learning.

The model records the event time it was fitted up to (``until_ms``, else the history's
last event time): a deployment that reads that history again, to build its users'
states, scores and tiers it but does not learn it a second time
(:meth:`~online_models.online.OnlineModels.learns_at`).

>>> import orjson
>>> from consumer.service.settings import Settings
>>> from consumer.service.records import InputRecord
>>> rows = [InputRecord("f", 0, i, None, None, orjson.dumps({"event_id": f"e{i}",
...         "user_id": f"u{i % 200}", "event_type": "purchase", "amount": 10.0,
...         "timestamp": 1_767_225_600_000 + i * 3_600_000})) for i in range(3000)]
>>> model = fit_model(Settings.from_env({}), lambda: rows, passes=2)
>>> model.version > 0, model.samples_seen > 0
(True, True)
>>> model.fitted_until_ms == 1_767_225_600_000 + 2999 * 3_600_000
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import orjson

from consumer.service.records import InputRecord
from consumer.service.settings import Settings
from consumer.service.state_store import MemoryStateStore
from consumer.tools.replay import Replay
from online_models.global_model import GlobalModel

__all__ = ["fit_model"]


def fit_model(
    settings: Settings,
    records: Callable[[], Iterable[InputRecord]],
    *,
    passes: int = 1,
    until_ms: int | None = None,
    start: GlobalModel | None = None,
) -> GlobalModel:
    """The model after ``passes`` replays of ``records()`` (called once per pass) with
    the tier config of ``settings``, starting from ``start`` (version 0 if None), fitted
    up to ``until_ms`` (else the last event time read)."""
    if passes < 1:
        raise ValueError("passes must be >= 1")
    model = start
    fitted_until = until_ms
    for _ in range(passes):
        store = MemoryStateStore()
        if model is not None:  # every pass learns the whole history, whatever it started from
            store.put_model(orjson.dumps(model.replace(fitted_until_ms=None).to_json()))
        replay = Replay.from_settings(settings, store, emit=lambda _: None, check_keys=False)
        summary = replay.run(records(), until_ms=until_ms)
        # What was learnt since the last version would wait for more samples that never
        # come, and a deployment starting from the fit does not learn that history again.
        models = replay.engine.models
        models.close_version()
        if models.model.version == 0:
            raise ValueError("the history built no model version: it needs more events")
        model = models.model
        if until_ms is None:
            fitted_until = summary.max_event_ms
    assert model is not None
    return model.replace(fitted_until_ms=fitted_until)
