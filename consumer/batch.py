"""One poll batch through the core, without I/O: decode, skip what was applied, apply,
and collect the state to save and the records to publish.

The caller loads state before :meth:`BatchStep.apply` and saves the result after it;
see :mod:`consumer.checkpoint` for the order of those steps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from consumer.dead_letters import dead_letter
from consumer.records import InputRecord, OutputRecord
from online_models.engine import DUPLICATE, TierEngine
from online_models.event import Event
from online_models.tier_change import TierChange
from online_models.user_state import UserState
from schemas.decode import EventDecoder, Rejection

Partition = tuple[str, int]


@dataclass
class Decoded:
    """A batch after decoding: each record with its event or rejection."""

    items: list[tuple[InputRecord, Event | Rejection]]
    users: list[str]
    partitions: list[Partition]


@dataclass
class BatchOutcome:
    """What a batch changed: states to save, offsets applied, records to publish."""

    states: dict[str, bytes] = field(default_factory=dict)
    applied: dict[Partition, int] = field(default_factory=dict)
    outputs: dict[Partition, list[OutputRecord]] = field(default_factory=dict)
    results: Counter[str] = field(default_factory=Counter)
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    changes: list[TierChange] = field(default_factory=list)
    max_event_ms: int | None = None

    @property
    def output_count(self) -> int:
        """How many records this batch publishes."""
        return sum(len(v) for v in self.outputs.values())


class BatchStep:
    """Decodes records and applies them to user states through a :class:`TierEngine`."""

    def __init__(
        self,
        engine: TierEngine,
        decoder: EventDecoder,
        *,
        output_topic: str,
        dlq_topic: str,
        dlq_max_copy_bytes: int,
    ) -> None:
        self.engine = engine
        self.decoder = decoder
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        self.dlq_max_copy_bytes = dlq_max_copy_bytes

    def decode(self, records: Sequence[InputRecord]) -> Decoded:
        """Decode every record; collect the users and partitions the batch touches."""
        decode = self.decoder.decode
        items: list[tuple[InputRecord, Event | Rejection]] = []
        users: dict[str, None] = {}
        partitions: dict[Partition, None] = {}
        for rec in records:
            result = decode(rec.value)
            items.append((rec, result))
            if isinstance(result, Event):
                users[result.user_id] = None
            partitions[(rec.topic, rec.partition)] = None
        return Decoded(items, list(users), list(partitions))

    def apply(
        self,
        decoded: Decoded,
        stored: Mapping[str, bytes | None],
        applied: Mapping[Partition, int],
        *,
        emitted_at_ms: int,
    ) -> BatchOutcome:
        """Apply the batch to the users' ``stored`` states.

        Records at or below a partition's ``applied`` offset were applied by an earlier
        run whose offsets did not reach Kafka: they are skipped, outputs included.
        """
        out = BatchOutcome()
        states: dict[str, UserState] = {}
        for rec, item in decoded.items:
            tp = (rec.topic, rec.partition)
            if rec.offset <= applied.get(tp, -1):
                out.results["skipped"] += 1
                continue
            out.applied[tp] = rec.offset
            if isinstance(item, Rejection):
                out.results["dlq"] += 1
                out.dlq_reasons[item.reason] += 1
                out.outputs.setdefault(tp, []).append(
                    dead_letter(rec, item, self.dlq_topic, max_copy_bytes=self.dlq_max_copy_bytes)
                )
                continue
            user = item.user_id
            state = states.get(user)
            if state is None:
                raw = stored.get(user)
                state = UserState.from_json(orjson.loads(raw)) if raw else UserState.new()
                states[user] = state
            change = self.engine.apply(state, item, emitted_at_ms=emitted_at_ms)
            if change is DUPLICATE:
                out.results["duplicate"] += 1
                continue
            out.results["applied"] += 1
            if out.max_event_ms is None or item.timestamp_ms > out.max_event_ms:
                out.max_event_ms = item.timestamp_ms
            if isinstance(change, TierChange):
                out.changes.append(change)
                out.outputs.setdefault(tp, []).append(
                    OutputRecord(self.output_topic, user.encode(), orjson.dumps(change.to_json()))
                )
        out.states = {user: orjson.dumps(s.to_json()) for user, s in states.items()}
        return out
