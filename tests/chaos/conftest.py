"""Fixtures of the chaos suite, and which of its tests a run selects.

Two sizes. The small scenarios are marked ``chaos``, ``integration`` and ``slow``:
``make test-slow`` runs them (CI too, after ``make test``) against the standard stack
(``TIERSTREAM_TEST_KAFKA`` / ``TIERSTREAM_TEST_REDIS``), which they never restart (Redis
faults use a private ``redis-server``). The full ones are marked ``chaos`` only and run
with ``make chaos`` (``pytest -m chaos``) on the chaos stack, whose servers they restart
and roll back; a run whose ``-m`` does not name ``chaos`` leaves them out, so ``make
test`` and ``make test-unit`` never start them.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.records import InputRecord
from consumer.service.tier_config import load_engine
from consumer.tools.replay import replay
from online_models.global_model import GlobalModel
from tests.chaos.harness import Endpoints, HarnessError, StackControl
from tests.chaos.scenario import write_reliability_doc

#: kafka-python leaves the socket of a failed connection attempt open (while a broker is
#: down, every reconnect of the test's own producer or reader leaks one). Inside a chaos
#: test that is expected noise, not a defect of the test: ignored there, and collected
#: before the test ends so that it never surfaces in a later test.
SOCKET_LEAKS = "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("chaos"):
            item.add_marker(pytest.mark.filterwarnings(SOCKET_LEAKS))
    if "chaos" in (config.getoption("markexpr") or ""):
        return
    full = [
        i
        for i in items
        if i.get_closest_marker("chaos") and not i.get_closest_marker("integration")
    ]
    if full:
        config.hook.pytest_deselected(items=full)
        items[:] = [i for i in items if i not in full]


@pytest.fixture(autouse=True)
def _collect_leaked_sockets(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if request.node.get_closest_marker("chaos"):
        gc.collect()


@pytest.fixture
def workdir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where a scenario keeps its instances' logs and control files: for the full suite
    ``.stack-chaos/runs/<test>`` (kept until the test runs again, whatever else runs
    pytest meanwhile), for the small one the test's ``tmp_path``."""
    node = request.node
    if node.get_closest_marker("integration"):
        return tmp_path
    path = StackControl.chaos().directory / "runs" / re.sub(r"[^\w.-]+", "_", node.name)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def pytest_sessionfinish(session: pytest.Session) -> None:
    if getattr(session.config, "_chaos_figures", False):
        write_reliability_doc()


@pytest.fixture(scope="session")
def chaos_stack(request: pytest.FixtureRequest) -> Iterator[StackControl]:
    """The chaos stack (``make chaos`` starts it; started here if it is not running, and
    then stopped at the end). Full scenarios only: they restart its servers."""
    stack = StackControl.chaos()
    started = False
    if not (stack.redis_up() and stack.kafka_up()):
        try:
            stack.sh("up")
        except HarnessError as exc:
            pytest.fail(f"cannot start the chaos stack: {exc}", pytrace=False)
        started = True
    request.config._chaos_figures = True  # type: ignore[attr-defined]
    yield stack
    if started:
        stack.sh("down")


@pytest.fixture(scope="session")
def small_endpoints() -> Endpoints:
    """The stack the integration tests use (``TIERSTREAM_TEST_*``), used read-only: never
    restarted. Fails (never skips) when it is down."""
    kafka = os.environ.get("TIERSTREAM_TEST_KAFKA", "127.0.0.1:9092")
    url = os.environ.get("TIERSTREAM_TEST_REDIS", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {url} is unreachable ({exc}): make stack-up", pytrace=False)
    return Endpoints(kafka, url)


#: The stream the frozen model is trained on (not any scenario's stream).
TRAINING = GeneratorConfig(users=600, events=16_000, seed=1234, days=150)


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory, quick_models: Path) -> Path:
    """A model file trained in memory (learning on, models that advance quickly), with
    segments and non-zero propensity weights: frozen, it gives users different scores, so
    "equal to the clean run" proves something about the models too."""
    records = [
        InputRecord("training", 0, i, None, r.key, r.value)
        for i, r in enumerate(generate(TRAINING))
    ]
    _, store = replay(records, load_engine(quick_models))
    assert store.model is not None, "the training stream should build a model"
    model = GlobalModel.from_json(orjson.loads(store.model))
    assert model.has_segments and len(model.centroids) > 1, "the model has no segments"
    assert any(w != 0 for w in model.weights), "the model's propensity weights are all zero"
    path = tmp_path_factory.mktemp("model") / "trained-model.json"
    path.write_bytes(store.model)
    return path
