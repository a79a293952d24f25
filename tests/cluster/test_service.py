"""`tierstream run` over a generated stream on the local stack's Kafka, its state in a
real Redis Cluster: the final state is what one clean in-memory pass computes (frozen
model), every tier change is on the topic; also when a primary is killed mid-run (its
replica takes over; the service retries, reads again what the lost writes held), on a
cluster and behind Sentinel."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.kafka_io import produce_records
from consumer.service.keys import KeySpace
from consumer.service.redis_store import RedisStateStore
from online_models.global_model import GlobalModel
from tests.cluster.servers import Cluster, SentinelSetup, Server, wait_until
from tests.integration.support import KAFKA, Names, cli
from tests.integration.test_faults import check_exact, start_service

pytestmark = pytest.mark.redis_cluster

CONFIG = GeneratorConfig(users=300, events=6000, seed=91, days=50, bad_fraction=0.01)
PARTITIONS = 4


def _produce(names: Names) -> None:
    records = ((r.key, r.value) for r in generate(CONFIG))
    produce_records(KAFKA, names.input, records, partitions=PARTITIONS)


def test_the_service_on_a_redis_cluster_equals_a_clean_run(
    names: Names, redis_cluster: Cluster, trained_model: GlobalModel, trained_model_file: Path
) -> None:
    _produce(names)
    env = names.env(
        TIERSTREAM_REDIS_URL=redis_cluster.url, TIERSTREAM_MODEL_FILE=str(trained_model_file)
    )
    run = cli("run", "--stop-when-idle", "3", env=env)
    assert run.returncode == 0, run.stderr
    check_exact(names, redis_cluster.url, trained_model)
    store = RedisStateStore(redis_cluster.url, prefix=names.prefix)
    assert store.partition_counts() == {names.input: PARTITIONS}
    store.close()
    snap = cli("snapshot", "--out", "-", env=env)
    assert snap.returncode == 0, snap.stderr
    assert len(snap.stdout.splitlines()) == CONFIG.users


def _kill_mid_run(names: Names, url: str, model_file: Path, kill: Callable[[], None]) -> None:
    """Run the service over the stream; ``kill`` a Redis server once it applied some
    records; the service must notice, retry and finish."""
    _produce(names)
    env = names.env(
        TIERSTREAM_REDIS_URL=url,
        TIERSTREAM_MODEL_FILE=str(model_file),
        TIERSTREAM_MAX_POLL_RECORDS="100",  # many batches: the kill lands mid-run
    )
    proc = start_service(env)
    store = RedisStateStore(url, prefix=names.prefix)
    parts = [(names.input, p) for p in range(PARTITIONS)]
    try:
        wait_until(
            "the service to apply some records",
            lambda: sum(v or 0 for v in store.applied_offsets(parts).values()) > 400,
            90,
        )
        store.close()
        kill()
        _, err = proc.communicate(timeout=240)
    finally:
        store.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert re.search(r"batch failed \(StateStoreError", err), "the kill went unnoticed"


def test_a_primary_killed_mid_run_is_replaced_and_nothing_is_lost_or_doubled(
    names: Names, fresh_cluster: Cluster, trained_model: GlobalModel, trained_model_file: Path
) -> None:
    key = KeySpace(names.prefix).applied(names.input, 0)
    victims: list[Server] = []

    def kill() -> None:
        victims.append(fresh_cluster.primary_of(key))
        victims[0].kill()

    _kill_mid_run(names, fresh_cluster.url, trained_model_file, kill)
    assert fresh_cluster.primary_of(key) is not victims[0]  # its replica took over
    check_exact(names, fresh_cluster.url, trained_model)


def test_sentinel_fails_over_mid_run_and_nothing_is_lost_or_doubled(
    names: Names,
    fresh_sentinel: SentinelSetup,
    trained_model: GlobalModel,
    trained_model_file: Path,
) -> None:
    _kill_mid_run(names, fresh_sentinel.url, trained_model_file, fresh_sentinel.primary.kill)
    assert fresh_sentinel.primary_port() == fresh_sentinel.replica.port  # promoted
    check_exact(names, fresh_sentinel.url, trained_model)
