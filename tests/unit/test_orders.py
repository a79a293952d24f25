"""The purchase-only generator looks like an order export: purchases only, few per
customer, months apart, heavy-tailed amounts, a category per order."""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict

import orjson

from consumer.demo.orders import OrderConfig, generate_orders
from schemas.decode import EventDecoder, parse_rfc3339_ms


def test_an_order_export_is_sparse_valid_and_heavy_tailed() -> None:
    decoder = EventDecoder()
    records = list(generate_orders(OrderConfig(users=2000, seed=11)))
    times: dict[str, list[int]] = defaultdict(list)
    amounts = []
    for r in records:
        event = decoder.decode(r.value)
        assert not hasattr(event, "reason"), event
        body = orjson.loads(r.value)
        assert body["event_type"] == "purchase" and body["properties"]["category"]
        times[body["user_id"]].append(parse_rfc3339_ms(body["timestamp"]))
        amounts.append(body["amount"])
    per_customer = [len(t) for t in times.values()]
    assert len(times) == 2000
    assert statistics.median(per_customer) <= 3  # few orders per customer
    gaps = [b - a for t in times.values() for a, b in itertools.pairwise(t)]
    assert statistics.median(gaps) > 20 * 86_400_000  # weeks to months apart
    assert max(amounts) > 20 * statistics.median(amounts)  # a heavy tail
    stamps = [parse_rfc3339_ms(orjson.loads(r.value)["timestamp"]) for r in records]
    assert stamps == sorted(stamps)
