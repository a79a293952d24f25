"""The client ceiling: kafka-python polls a topic to its end and ``orjson.loads`` every
record, nothing else. Run as its own process by the throughput bench::

    python -m tests.bench.raw_client BOOTSTRAP TOPIC

prints one JSON object: ``records``, ``seconds`` (first record received to last record
decoded), ``cpu_s`` (the process's CPU time, all threads, over the same span) and
``crc32c`` (whether kafka-python checksums with the C extension).
"""

from __future__ import annotations

import sys
import time

import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.record import util


def main(bootstrap: str, topic: str) -> int:
    # Partitions assigned, not subscribed: no group protocol, the client alone.
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=2000
    )
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    left = sum(ends.values())
    records = 0
    first = cpu = 0.0
    while left > records:
        for batch in consumer.poll(timeout_ms=1000).values():
            if not first:
                first, cpu = time.perf_counter(), time.process_time()
            for r in batch:
                orjson.loads(r.value)
            records += len(batch)
    seconds = time.perf_counter() - first if first else 0.0
    cpu = time.process_time() - cpu if first else 0.0
    consumer.close()
    crc = util.crc32c_c is not None
    print(
        orjson.dumps({"records": records, "seconds": seconds, "cpu_s": cpu, "crc32c": crc}).decode()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
