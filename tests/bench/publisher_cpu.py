"""The CPU the publisher spends per record it hands to Kafka, with the records appended to
kafka-python's accumulator directly (:mod:`consumer.service.record_appender`) and with
``KafkaProducer.send`` for each, alternated in one process against the real broker
(docs/performance.md, "Handing records to the producer").

Each round publishes what a batch of ``--users`` new users makes: a tier change of about
900 bytes and a current-tier record of about 200 bytes per user, to two 4-partition
topics, with the service's headers. The hand-over (``Publisher.send``) and the
acknowledgements (the flush, on the publisher's own thread) are timed as process CPU,
which counts kafka-python's sender thread too; the median round of each way is printed.

    python -m tests.bench.publisher_cpu --rounds 6

>>> print(table({"send": [(28.14, 29.6)], "appended": [(17.9, 19.71)]}))
| 4,000 records a round, median of 1 | CPU per record: the hand-over | with the acknowledgements |
| --- | --- | --- |
| `KafkaProducer.send` | 28.1 µs | 29.6 µs |
| the appender | 17.9 µs | 19.7 µs |
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

from consumer.service.headers import output_headers
from consumer.service.kafka_io import Publisher, ensure_topics
from consumer.service.records import OutputRecord
from tests.bench import report, workloads
from tests.integration.support import KAFKA

#: A tier change's bytes and a current-tier record's, about as the service writes them.
CHANGE_BYTES = 900
CURRENT_BYTES = 200
_LABELS = {"send": "`KafkaProducer.send`", "appended": "the appender"}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kafka", default=KAFKA, help="bootstrap (TIERSTREAM_TEST_KAFKA)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of each way, alternated")
    ap.add_argument("--users", type=int, default=2000, help="new users a round")
    args = ap.parse_args(argv)
    run = workloads.run_id()
    changes, tiers = workloads.unique(run, "changes"), workloads.unique(run, "tiers")
    ensure_topics(args.kafka, [changes, tiers], partitions=workloads.PARTITIONS)
    headers = output_headers(changes=changes, dlq="unused", tiers=tiers, forget_into="unused")
    publisher = Publisher(args.kafka, headers=headers)
    appender = publisher._append
    if appender is None:
        print("this kafka-python is not fed directly: nothing to compare", file=sys.stderr)
        return 1
    change, current = b"c" * CHANGE_BYTES, b"t" * CURRENT_BYTES
    times: dict[str, list[tuple[float, float]]] = {"send": [], "appended": []}
    try:
        for n in range(args.rounds):
            for way in times:
                publisher._append = appender if way == "appended" else None
                records = []
                for i in range(args.users):
                    key = f"{way}-{n}-{i:07d}".encode()
                    records += [
                        OutputRecord(changes, key, change),
                        OutputRecord(tiers, key, current),
                    ]
                began = time.process_time()
                sent = publisher.send(records)
                handed = time.process_time()
                sent.wait()
                done = time.process_time()
                per = 1e6 / len(records)
                times[way].append(((handed - began) * per, (done - began) * per))
    finally:
        publisher.close()
        workloads.delete_topics(args.kafka, run)
    print(table(times, records=2 * args.users))
    return 0


def table(times: dict[str, list[tuple[float, float]]], *, records: int = 4000) -> str:
    """The median round of each way, as docs/performance.md shows it."""
    rows = []
    for way, rounds in times.items():
        handed = statistics.median(h for h, _ in rounds)
        acked = statistics.median(a for _, a in rounds)
        rows.append([_LABELS[way], f"{handed:.1f} µs", f"{acked:.1f} µs"])
    n = max(len(r) for r in times.values())
    header = [
        f"{records:,} records a round, median of {n}",
        "CPU per record: the hand-over",
        "with the acknowledgements",
    ]
    return report.table(header, rows)


if __name__ == "__main__":
    sys.exit(main())
