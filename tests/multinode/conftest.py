"""The multi-node suite (``make test-cluster``): the service on the stack of
``ops/cluster-stack.sh`` (3 Kafka brokers behind SASL_SSL/SCRAM, a 6-node Redis Cluster).

Its tests are marked ``multinode`` and need that stack: ``make test-cluster`` starts it,
runs ``pytest -m multinode tests/multinode`` and stops it. Any run whose ``-m`` does not
name ``multinode`` (``make test``) leaves them out, so the single-node suite never waits
for a stack it does not start.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from consumer.service.kafka_connection import KafkaConnection
from consumer.service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "ops" / "cluster-stack.sh"


#: kafka-python leaves the socket of a failed connection attempt open (to a killed broker,
#: in the test process's own producer and readers too): expected noise here, as in the
#: chaos suite; ignored inside these tests and collected before each ends.
SOCKET_LEAKS = (
    "ignore:Exception ignored in. <(socket.socket|ssl.SSLSocket):"
    "pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(autouse=True)
def _collect_leaked_sockets(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if request.node.get_closest_marker("multinode"):
        gc.collect()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "multinode" in (config.getoption("markexpr") or ""):
        for item in items:
            if item.get_closest_marker("multinode"):
                item.add_marker(pytest.mark.filterwarnings(SOCKET_LEAKS))
        return
    mine = [i for i in items if i.get_closest_marker("multinode")]
    if mine:
        config.hook.pytest_deselected(items=mine)
        items[:] = [i for i in items if i not in mine]


def stack(*args: str, timeout: float = 300) -> str:
    """Run ``ops/cluster-stack.sh ARGS``; its stdout."""
    done = subprocess.run(
        ["bash", str(STACK), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    if done.returncode != 0:
        raise RuntimeError(f"cluster-stack.sh {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


@dataclass(frozen=True)
class ClusterNames:
    """Topics, group and key prefix of one test, and the service's settings for them."""

    base: dict[str, str]
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def input(self) -> str:
        return f"cl-events-{self.suffix}"

    @property
    def output(self) -> str:
        return f"cl-changes-{self.suffix}"

    @property
    def group(self) -> str:
        return f"cl-group-{self.suffix}"

    @property
    def prefix(self) -> str:
        return f"cl{self.suffix}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSTREAM_")}
        env.update(self.base)
        env.update(
            TIERSTREAM_GROUP_ID=self.group,
            TIERSTREAM_INPUT_TOPIC=self.input,
            TIERSTREAM_OUTPUT_TOPIC=self.output,
            TIERSTREAM_DLQ_TOPIC=f"cl-dlq-{self.suffix}",
            TIERSTREAM_TIERS_TOPIC=f"cl-tiers-{self.suffix}",
            TIERSTREAM_FORGET_TOPIC=f"cl-forget-{self.suffix}",
            TIERSTREAM_KEY_PREFIX=self.prefix,
            TIERSTREAM_METRICS_PORT="0",
        )
        env.update(extra)
        return env

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env())

    @property
    def kafka(self) -> KafkaConnection:
        return self.settings.kafka


@pytest.fixture(scope="session")
def cluster_env() -> dict[str, str]:
    """The settings ``cluster-stack.sh env`` prints; fails (never skips) when it is down."""
    try:
        stack("status", timeout=60)
    except RuntimeError as exc:
        pytest.fail(f"the cluster stack is not up (make cluster-stack-up): {exc}", pytrace=False)
    return dict(re.findall(r"^export (TIERSTREAM_\w+)=(.*)$", stack("env"), flags=re.M))


@pytest.fixture
def names(cluster_env: dict[str, str]) -> Iterator[ClusterNames]:
    yield ClusterNames(cluster_env)
