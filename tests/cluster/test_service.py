"""`tierstream run` over a generated stream on the local stack's Kafka, its state in a
real Redis Cluster: the final state is what one clean in-memory pass computes (frozen
model), every tier change is on the topic; also when a primary is killed mid-run (its
replica takes over; the service retries, reads again what the lost writes held)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from consumer.demo.synthetic import GeneratorConfig, generate
from consumer.service.kafka_io import produce_records
from consumer.service.redis_store import RedisStateStore
from online_models.global_model import GlobalModel
from tests.cluster.servers import Cluster, wait_until
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
    store = RedisStateStore(redis_cluster.url, prefix=names.prefix, ttl_seconds=1)
    assert store.partition_counts() == {names.input: PARTITIONS}
    store.close()
    snap = cli("snapshot", "--out", "-", env=env)
    assert snap.returncode == 0, snap.stderr
    assert len(snap.stdout.splitlines()) == CONFIG.users


def test_a_primary_killed_mid_run_is_replaced_and_nothing_is_lost_or_doubled(
    names: Names, fresh_cluster: Cluster, trained_model: GlobalModel, trained_model_file: Path
) -> None:
    _produce(names)
    env = names.env(
        TIERSTREAM_REDIS_URL=fresh_cluster.url,
        TIERSTREAM_MODEL_FILE=str(trained_model_file),
        TIERSTREAM_MAX_POLL_RECORDS="100",  # many batches: the kill lands mid-run
    )
    proc = start_service(env)
    store = RedisStateStore(fresh_cluster.url, prefix=names.prefix, ttl_seconds=1)
    victim_key = store.keys.applied(names.input, 0)
    parts = [(names.input, p) for p in range(PARTITIONS)]

    def some_progress() -> bool:
        applied = store.applied_offsets(parts)
        return sum(v or 0 for v in applied.values()) > 400

    try:
        wait_until("the service to apply some records", some_progress, 90)
        victim = fresh_cluster.primary_of(victim_key)
        victim.kill()
        killed_at = time.monotonic()
        _, err = proc.communicate(timeout=240)
    finally:
        store.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert fresh_cluster.primary_of(victim_key) is not victim  # its replica took over
    assert re.search(r"batch failed \(StateStoreError", err), "the kill went unnoticed"
    assert time.monotonic() - killed_at < 200
    check_exact(names, fresh_cluster.url, trained_model)
