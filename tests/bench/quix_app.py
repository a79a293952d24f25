"""A minimal Quix Streams app doing a stateful per-user job on the same input as the
service, the yardstick of issue 12. Run as its own process by the throughput bench::

    python -m tests.bench.quix_app BOOTSTRAP INPUT OUTPUT GROUP STATE_DIR END_OFFSETS_JSON

For every event it keeps the user's event count and spend (purchases minus refunds) in
its RocksDB state store, which Quix Streams backs with a changelog topic, derives a tier
from them, and produces a record to OUTPUT when that tier changes (as the service
publishes tier changes, not every event). JSON in and out (Quix Streams decodes with
orjson). It stops by itself once every partition has been processed to the end offsets
it was given (``on_message_processed`` calls ``Application.stop``; ``run()`` then
commits its checkpoint: producer flushed, offsets committed, state flushed), and prints
one JSON object: ``records``, ``outputs``, ``seconds`` (first record processed to the
final commit done) and ``cpu_s`` (the process's CPU time, librdkafka's threads included,
over the same span).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson
from quixstreams import Application, State


def tier(count: int, spend: float) -> str:
    """A tier from the two per-user numbers: thresholds, like a tier policy without models.

    >>> tier(1, 0.0), tier(12, 0.0), tier(3, 250.0), tier(40, 2_000.0)
    ('new', 'engaged', 'customer', 'vip')
    """
    if spend >= 1_000.0:
        return "vip"
    if spend > 0.0:
        return "customer"
    return "engaged" if count >= 10 else "new"


def update(event: dict[str, Any], state: State) -> dict[str, Any] | None:
    """Count and spend in the state store (one entry per user: one read and one write per
    event); a record to produce when the tier changes."""
    user = state.get("user") or {"count": 0, "spend": 0.0, "tier": None}
    user["count"] += 1
    amount = event.get("amount") or 0.0
    if event.get("event_type") == "purchase":
        user["spend"] += amount
    elif event.get("event_type") == "refund":
        user["spend"] -= amount
    new = tier(user["count"], user["spend"])
    changed = new != user["tier"]
    user["tier"] = new
    state.set("user", user)
    if not changed:
        return None
    return {"user_id": event.get("user_id"), **user}


def main(
    bootstrap: str,
    input_topic: str,
    output_topic: str,
    group: str,
    state_dir: str,
    ends: str,
) -> int:
    todo = {int(p): end for p, end in orjson.loads(ends).items() if end > 0}
    clock = {"first": 0.0, "cpu": 0.0}
    counts = {"records": 0, "outputs": 0}

    def processed(topic: str, partition: int, offset: int) -> None:
        if not clock["first"]:
            clock["first"], clock["cpu"] = time.perf_counter(), time.process_time()
        counts["records"] += 1
        if topic == input_topic and offset + 1 >= todo.get(partition, 0):
            todo.pop(partition, None)
            if not todo:
                app.stop()

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
        on_message_processed=processed,
    )
    source = app.topic(input_topic, key_deserializer="str", value_deserializer="json")
    sink = app.topic(output_topic, key_serializer="str", value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.apply(update, stateful=True).filter(lambda change: change is not None)
    sdf = sdf.update(lambda _: counts.__setitem__("outputs", counts["outputs"] + 1))
    sdf.to_topic(sink)
    if todo:
        app.run()
    seconds = time.perf_counter() - clock["first"] if clock["first"] else 0.0
    cpu = time.process_time() - clock["cpu"] if clock["first"] else 0.0
    print(orjson.dumps({**counts, "seconds": seconds, "cpu_s": cpu}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:7]))
