"""One poll batch through the core, without I/O: decode, skip what was applied, apply
events and due timers, and collect what to save and what to publish.

Timers (a user's label deadline or inactivity re-score) fire when their partition's
event-time watermark (the newest event time read on it) passes them, interleaved with
the events in read order: before an event is applied, every timer of its partition due at
or before the watermark fires, earliest first. Where batches are cut changes nothing.

A record is dead-lettered, never applied, when it cannot be decoded, lies outside the
deployment's limits (:class:`~schemas.decode.Limits`), is keyed by something else than
its ``user_id`` (the partition would not own the user), or belongs to a user whose stored
state cannot be read (``unusable_state``: that user is set aside, the partition goes on).

A user's lifetime ends when they are forgotten, or when their last timer finds them
silent for the state's time-to-live (event time, :meth:`TierEngine.expires`): their
state and timer are deleted, and their key gets a tombstone on the current-tier topic.
A timer alone never recreates a state that is gone.

Every write of a partition carries what it changes in the partition's tier populations
(a user's stored tier before the batch against the one written, or none when the state
is deleted) and its conversion counts (the labels its users' events and timers
resolved): :mod:`consumer.service.tier_counts`.

The caller loads state before :meth:`BatchStep.apply` and saves the result after it;
see :mod:`consumer.service.checkpoint` for the order of those steps.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from consumer.service.dead_letters import dead_letter
from consumer.service.model_files import stored_model
from consumer.service.records import InputRecord, OutputRecord, pack_outbox
from consumer.service.state_store import Loaded, PartitionWrite, SaveSet, compact
from consumer.service.tier_counts import conversion_key
from online_models.engine import Decision, TierEngine
from online_models.erasure import ForgetRequest
from online_models.event import Event
from online_models.online import Resolved
from online_models.state_codec import decode_state, encode_state
from online_models.tier_change import TierChange
from online_models.user_state import UserState
from schemas.decode import EventDecoder, Rejection, key_rejection

Partition = tuple[str, int]
#: Where a user's state lives: (home partition, user id).
Home = tuple[Partition, str]


@dataclass
class Decoded:
    """A batch after decoding: each record with its event or rejection."""

    items: list[tuple[InputRecord, Event | ForgetRequest | Rejection]]
    #: Per partition, the users its records are about (their home is that partition).
    users: dict[Partition, list[str]]
    partitions: list[Partition]
    #: Per partition, the newest event time in the batch (timers due by then may fire).
    newest: dict[Partition, int]


@dataclass
class Tally:
    """What a batch's records and timers did in one partition, for the counters (a
    partition's are counted once that partition is saved).

    >>> a, b = Tally(), Tally()
    >>> a.results["applied"] += 2; b.results["applied"] += 1; b.timers_fired += 3
    >>> a.add(b); (a.results["applied"], a.timers_fired)
    (3, 3)
    """

    #: Per record, what became of it: applied, duplicate, skipped, dlq or forgotten.
    results: Counter[str] = field(default_factory=Counter)
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    changes: list[TierChange] = field(default_factory=list)
    timers_fired: int = 0
    #: Users whose state was deleted after the state's time-to-live of silence.
    expired: int = 0

    def add(self, other: Tally) -> None:
        self.results.update(other.results)
        self.dlq_reasons.update(other.dlq_reasons)
        self.changes.extend(other.changes)
        self.timers_fired += other.timers_fired
        self.expired += other.expired


@dataclass
class BatchOutcome:
    """What a batch changed: what to save, what to publish, what to count."""

    save: SaveSet = field(default_factory=SaveSet)
    outputs: dict[Partition, list[OutputRecord]] = field(default_factory=dict)
    #: Per partition of the batch, what its records and timers did.
    tallies: dict[Partition, Tally] = field(default_factory=dict)
    #: Every tier change of the batch, in the order they are published.
    changes: list[TierChange] = field(default_factory=list)
    #: The propensity labels resolved in this batch.
    resolved: list[Resolved] = field(default_factory=list)
    #: Per partition of the batch, its users per tier once the batch is saved.
    populations: dict[Partition, dict[str, int]] = field(default_factory=dict)
    model_advanced: bool = False
    #: When the model advanced: the instances whose learning the new version folds in.
    folded: list[str] = field(default_factory=list)
    #: How often the batch's learning was learnt again on a version another instance
    #: wrote meanwhile (:meth:`BatchStep.rebase`); whether it was dropped in the end.
    learning_rebases: int = 0
    learning_dropped: bool = False
    max_event_ms: int | None = None
    #: Partitions whose batch stopped early because the loaded timers ran out (the store
    #: loads them in bounded slices): the offset of the first record not applied.
    cut: dict[Partition, int] = field(default_factory=dict)
    #: Partitions whose watermark advance stopped early, at this event time, for the same
    #: reason (:meth:`BatchStep.advance`).
    advanced_to: dict[Partition, int] = field(default_factory=dict)

    @property
    def output_count(self) -> int:
        """How many records this batch publishes."""
        return sum(len(v) for v in self.outputs.values())

    def tally(self, tp: Partition) -> Tally:
        """The partition's tally, started on first use."""
        t = self.tallies.get(tp)
        if t is None:
            t = self.tallies[tp] = Tally()
        return t

    @property
    def results(self) -> Counter[str]:
        """Per result, how many records of the batch had it."""
        return self.total().results

    @property
    def timers_fired(self) -> int:
        return self.total().timers_fired

    def total(self, partitions: Sequence[Partition] | None = None) -> Tally:
        """The tallies of ``partitions`` (default: all) added up."""
        out = Tally()
        for tp, t in self.tallies.items():
            if partitions is None or tp in partitions:
                out.add(t)
        return out


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
        instance_id: str = "local",
        check_keys: bool = True,
        tiers_topic: str = "user-tiers",
    ) -> None:
        self.engine = engine
        self.decoder = decoder
        self.output_topic = output_topic
        self.dlq_topic = dlq_topic
        #: The compacted current-tier topic: a forgotten user's key gets a tombstone there.
        self.tiers_topic = tiers_topic
        self.dlq_max_copy_bytes = dlq_max_copy_bytes
        self.instance_id = instance_id
        #: Refuse records whose key is not their user id (off for files, which have none).
        self.check_keys = check_keys
        self._model_raw: bytes | None = None
        #: Other instances' contributions as last parsed, by instance: (raw, parsed).
        self._others: dict[str, tuple[bytes, dict[str, Any]]] = {}
        #: The instances whose learning the current version's next merge folds in.
        self._learning_from: list[str] = [instance_id]

    def decode(self, records: Sequence[InputRecord], *, now_ms: int | None = None) -> Decoded:
        """Decode every record; collect the users and partitions the batch touches.
        ``now_ms`` is the wall clock the event-time window is measured from."""
        decode = self.decoder.decode
        check_keys = self.check_keys
        items: list[tuple[InputRecord, Event | ForgetRequest | Rejection]] = []
        users: dict[Partition, dict[str, None]] = {}
        partitions: dict[Partition, None] = {}
        newest: dict[Partition, int] = {}
        for rec in records:
            result = decode(rec.value, now_ms=now_ms)
            if check_keys and not isinstance(result, Rejection):
                result = key_rejection(rec.key, result.user_id) or result
            items.append((rec, result))
            tp = (rec.topic, rec.partition)
            partitions[tp] = None
            if isinstance(result, Event):
                users.setdefault(tp, {})[result.user_id] = None
                if result.timestamp_ms > newest.get(tp, -1):
                    newest[tp] = result.timestamp_ms
            elif isinstance(result, ForgetRequest):
                users.setdefault(tp, {})[result.user_id] = None
        return Decoded(items, {tp: list(u) for tp, u in users.items()}, list(partitions), newest)

    def apply(self, decoded: Decoded, loaded: Loaded, *, emitted_at_ms: int | None) -> BatchOutcome:
        """Apply the batch to the ``loaded`` state. ``emitted_at_ms`` stamps every tier
        change (the wall clock, in the service); None stamps each with its own event time
        (replays, byte-reproducible).

        Records at or below a partition's applied offset were applied by an earlier run
        whose offsets did not reach Kafka: they are skipped, outputs included.
        """
        self._adopt(loaded)
        run = _Run(self, loaded, emitted_at_ms)
        cut = run.out.cut
        for rec, item in decoded.items:
            tp = (rec.topic, rec.partition)
            if tp in cut:
                continue  # the rest of the partition waits for the next slice of timers
            if rec.offset <= loaded.applied.get(tp, -1):
                run.out.tally(tp).results["skipped"] += 1
                continue
            if isinstance(item, Rejection):
                run.applied[tp] = rec.offset
                run.dead_letter(tp, rec, item)
            elif isinstance(item, ForgetRequest):
                run.applied[tp] = rec.offset
                run.forget(tp, item)
            elif run.must_cut(tp, item.timestamp_ms):
                cut[tp] = rec.offset
            else:
                run.applied[tp] = rec.offset
                run.event(tp, rec, item, decoded.newest.get(tp, -1))
        return run.finish()

    def advance(
        self, loaded: Loaded, watermarks: Mapping[Partition, int], *, emitted_at_ms: int | None
    ) -> BatchOutcome:
        """Move watermarks forward without events (end of a replay with ``--until``):
        every timer due by then fires."""
        self._adopt(loaded)
        run = _Run(self, loaded, emitted_at_ms)
        for tp, wm in watermarks.items():
            if run.must_cut(tp, wm):
                run.out.advanced_to[tp] = run.watermarks[tp]
            else:
                run.advance(tp, wm, wm)
        return run.finish()

    def rollback_point(self) -> tuple[object, bytes | None]:
        """State of the models to go back to if the batch is not saved."""
        return self.engine.models.rollback_point(), self._model_raw

    def rollback(self, point: tuple[object, bytes | None]) -> None:
        """Undo what an unsaved batch taught the models."""
        models_point, self._model_raw = point
        self.engine.models.rollback(models_point)  # type: ignore[arg-type]

    def learning(self, save: SaveSet, out: BatchOutcome, loaded: Loaded) -> None:
        """What the models learnt since the batch's start, into ``save``: a new version
        if one advanced (``out`` says so, and whose learning it folds), this instance's
        contribution on the current version, and the contributions ``loaded`` held that
        the new version folds (or that are based on older ones): nobody reads them now.

        A batch that learnt nothing leaves the models' slot alone: its contribution is
        the one stored (the batch started from it, or from a fresh one on a version
        that folded it), so writing it again would cost a round trip, and a rebase
        whenever another instance wrote a version meanwhile."""
        models = self.engine.models
        out.model_advanced = models.take_advanced()
        save.model = orjson.dumps(models.model.to_json()) if out.model_advanced else None
        learnt = models.journal is None or bool(models.journal)  # None: not kept, unknown
        if not models.frozen and (learnt or out.model_advanced):
            save.contribution = (self.instance_id, orjson.dumps(models.contribution()))
        out.folded = []
        save.drop_contributions = ()
        if out.model_advanced:
            self._model_raw = save.model
            out.folded = list(self._learning_from)
            save.drop_contributions = sorted(
                i for i in loaded.contributions if i != self.instance_id
            )

    def rebase(
        self, point: tuple[object, bytes | None], loaded: Loaded, out: BatchOutcome
    ) -> SaveSet:
        """The batch's learning on the model and contributions of ``loaded``, read after
        its save found that another instance had written a version meanwhile (or changed
        a contribution the batch's new version folds): the models go back to where the
        batch started, adopt what is stored now and learn what the batch learnt again,
        in the same order. Returns the learning to save (no partition in it); ``out``
        says whether a version advanced. The batch's states and outputs are not touched:
        what it scored and decided stands."""
        models = self.engine.models
        journal = models.journal or []
        self.rollback(point)
        self._adopt(loaded)
        models.relearn(journal)
        save = SaveSet()
        self.learning(save, out, loaded)
        return save

    def _adopt(self, loaded: Loaded) -> None:
        models = self.engine.models
        if models.frozen:
            return
        if loaded.model is not None and loaded.model != self._model_raw:
            model = stored_model(loaded.model)
            self._model_raw = loaded.model
        else:
            model = models.model
        others = []
        self._learning_from = [self.instance_id]
        for instance, raw in sorted(loaded.contributions.items()):
            if instance == self.instance_id:
                continue
            cached = self._others.get(instance)
            if cached is None or cached[0] != raw:  # parse only what changed since
                cached = (raw, orjson.loads(raw))
                self._others[instance] = cached
            others.append(cached[1])
            if cached[1].get("base") == model.name:
                self._learning_from.append(instance)
        models.adopt(model, others)


class _Run:
    """The mutable bookkeeping of one :meth:`BatchStep.apply`."""

    def __init__(self, step: BatchStep, loaded: Loaded, emitted_at_ms: int | None) -> None:
        self.step = step
        self.engine = step.engine
        self.loaded = loaded
        self.emitted_at_ms = emitted_at_ms
        self.out = BatchOutcome()
        self.applied: dict[Partition, int] = {}
        #: Users are kept by (home partition, user id): the partition is where their
        #: state is stored (:mod:`consumer.service.keys`).
        self.states: dict[Home, UserState] = {}
        #: Users an event of which was read in this batch (their state's TTL restarts).
        self.active: set[Home] = set()
        #: Users whose stored state cannot be read, and why.
        self.unusable: dict[Home, str] = {}
        #: The tier of each user's stored state as loaded (None: no state): what the
        #: partition's population counted them in before the batch.
        self.stored_tiers: dict[Home, str | None] = {}
        #: Users whose lifetime ended in this batch, forgotten or expired (their key is
        #: deleted, unless they come back).
        self.ended: set[Home] = set()
        #: Per partition, the propensity labels resolved, by conversion key.
        self.conversions: dict[Partition, dict[str, int]] = {}
        self.watermarks = dict(loaded.watermarks)
        self.heaps: dict[Partition, list[tuple[int, str]]] = {
            tp: list(entries) for tp, entries in loaded.timers.items()
        }
        #: The engine's pass over the batch: decisions that need scores are taken at the
        #: end, all vectors scored together (:class:`~online_models.engine.EnginePass`).
        self.run = step.engine.batch()
        #: Per partition, in order, what the batch publishes: records known at once (dead
        #: letters, tombstones) and decisions whose changes are known at the end.
        self.sequence: list[tuple[Partition, OutputRecord | Decision]] = []
        for heap in self.heaps.values():
            heapq.heapify(heap)

    def state(self, tp: Partition, user: str) -> UserState | None:
        """The user's state (new if none is stored); None if the stored one is unusable."""
        state = self.states.get((tp, user))
        if state is None:
            if (tp, user) in self.unusable:
                return None
            raw = self.loaded.states.get(tp, {}).get(user)
            try:
                state = decode_state(raw) if raw else UserState.new()
            except (ValueError, TypeError, KeyError) as exc:
                why = f"stored state of user {user[:64]!r} is unusable: {exc}"[:300]
                self.unusable[(tp, user)] = why
                return None
            self.states[(tp, user)] = state
            self.stored_tiers[(tp, user)] = state.tier if raw else None
        return state

    def dead_letter(self, tp: Partition, rec: InputRecord, rejection: Rejection) -> None:
        tally = self.out.tally(tp)
        tally.results["dlq"] += 1
        tally.dlq_reasons[rejection.reason] += 1
        self.sequence.append(
            (
                tp,
                dead_letter(
                    rec,
                    rejection,
                    self.step.dlq_topic,
                    max_copy_bytes=self.step.dlq_max_copy_bytes,
                ),
            )
        )

    def event(self, tp: Partition, rec: InputRecord, event: Event, bound: int) -> None:
        self.advance(tp, event.timestamp_ms, bound)
        user = event.user_id
        state = self.state(tp, user)
        if state is None:
            self.dead_letter(tp, rec, Rejection("unusable_state", self.unusable[(tp, user)]))
            return
        self.active.add((tp, user))
        decision = self.run.event(state, event, emitted_at_ms=self._stamp(event.timestamp_ms))
        if not isinstance(decision, Decision):
            self.out.tally(tp).results["duplicate"] += 1
            return
        self.out.tally(tp).results["applied"] += 1
        if self.out.max_event_ms is None or event.timestamp_ms > self.out.max_event_ms:
            self.out.max_event_ms = event.timestamp_ms
        self.sequence.append((tp, decision))
        self.rearm(tp, user, state, bound)

    def advance(self, tp: Partition, t: int, bound: int) -> None:
        """Raise the partition's watermark to ``t`` and fire the timers due by then.
        ``bound`` is the newest event time of the partition in this batch: a timer
        re-armed at or before it must stay in the heap, to fire within this batch."""
        if t <= self.watermarks.get(tp, -1):
            return
        self.watermarks[tp] = t
        heap = self.heaps.get(tp)
        while heap and heap[0][0] <= t:
            self.fire(tp, *heapq.heappop(heap), bound)

    def fire(self, tp: Partition, due: int, user: str, bound: int) -> None:
        """One timer entry popped from the partition's heap."""
        state = self.state(tp, user)
        if state is None or state.due_ms != due:
            return  # re-armed since (a newer entry stands for it), or set aside
        tally = self.out.tally(tp)
        tally.timers_fired += 1
        ended = self.run.expire(state, user, due)
        if ended is not None:
            tally.expired += 1
            self.sequence.append((tp, ended))
            self.end(tp, user)
        else:
            decision = self.run.fire(state, user, due, emitted_at_ms=self._stamp(due))
            self.sequence.append((tp, decision))
            self.rearm(tp, user, state, bound)

    def count_resolved(self, tp: Partition, resolved: list[Resolved]) -> None:
        """Count the labels a decision resolved in the partition's conversions."""
        counts = self.conversions.setdefault(tp, {})
        for r in resolved:
            key = conversion_key(r.tier, control=r.control, converted=r.label)
            counts[key] = counts.get(key, 0) + 1

    def forget(self, tp: Partition, request: ForgetRequest) -> None:
        """Erase the user: an ``erased`` change if they had a state, a tombstone on the
        current-tier topic, and their state, timer and model-health memory gone. An event
        of theirs after this one starts a new lifetime."""
        user = request.user_id
        self.out.tally(tp).results["forgotten"] += 1
        state = self.state(tp, user)
        if state is not None and state.features.events:
            stamp = self.emitted_at_ms if self.emitted_at_ms is not None else request.requested_ms
            erased = self.run.erase(
                state, user, request.request_id, request.requested_ms, emitted_at_ms=stamp
            )
            self.sequence.append((tp, erased))
        self.unusable.pop((tp, user), None)
        self.end(tp, user)

    def end(self, tp: Partition, user: str) -> None:
        """The user's lifetime ends: a tombstone on the current-tier topic; their state
        and timer are deleted (unless an event of theirs follows in the batch)."""
        self.sequence.append((tp, OutputRecord(self.step.tiers_topic, user.encode(), None)))
        self.states[(tp, user)] = UserState.new()
        self.active.discard((tp, user))
        self.ended.add((tp, user))

    def must_cut(self, tp: Partition, t: int) -> bool:
        """Whether moving the watermark to ``t`` needs timers the store did not load (its
        slice was full). If so, the loaded ones fire now, all of them (they are due by
        the time the watermark reaches ``t``), and the partition stops here: the next
        slice is loaded with the records that follow."""
        cap = self.loaded.capped.get(tp)
        wm = self.watermarks.get(tp, -1)
        if cap is None or t <= wm or t <= cap:
            return False
        self.watermarks[tp] = max(wm, cap)
        heap = self.heaps.get(tp)
        while heap and heap[0][0] <= cap:
            self.fire(tp, *heapq.heappop(heap), cap)
        return True

    def _stamp(self, event_time_ms: int) -> int:
        return event_time_ms if self.emitted_at_ms is None else self.emitted_at_ms

    def rearm(self, tp: Partition, user: str, state: UserState, bound: int) -> None:
        if 0 <= state.due_ms <= bound:
            heapq.heappush(self.heaps.setdefault(tp, []), (state.due_ms, user))

    def write_user(self, write: PartitionWrite, tp: Partition, user: str, state: UserState) -> None:
        """What the partition writes of one user: their state (or its deletion), their
        timer, and the move of their tier in the partition's population."""
        if state.due_ms >= 0 and state.features.events:
            write.timers_set[user] = state.due_ms
        else:
            write.timers_clear.append(user)
        tier = None
        if (tp, user) in self.active:
            write.states[user] = encode_state(state)
            tier = state.tier
        elif state.features.events:  # a timer of a user whose state still exists
            write.quiet_states[user] = encode_state(state)
            tier = state.tier
        elif (tp, user) in self.ended:
            write.deleted_users.append(user)
        before = self.stored_tiers.get((tp, user))
        if before != tier:
            population = write.counts.population
            if before is not None:
                population[before] = population.get(before, 0) - 1
            if tier is not None:
                population[tier] = population.get(tier, 0) + 1

    def count_populations(self, save: SaveSet) -> None:
        """Drop the tiers whose moves cancel out; the partitions' populations once
        ``save`` is written go to the outcome."""
        for tp, stored in self.loaded.populations.items():
            totals = dict(stored)
            write = save.partitions.get(tp)
            if write is not None:
                population = {t: n for t, n in write.counts.population.items() if n}
                write.counts.population = population
                for t, n in population.items():
                    totals[t] = totals.get(t, 0) + n
            self.out.populations[tp] = totals

    def publish(self, tp: Partition, change: TierChange) -> None:
        """The change, and (unless it erases the user, whose tombstone :meth:`forget`
        writes) the user's new current-tier record, in the same outbox: the current-tier
        topic is never behind the change topic."""
        self.out.changes.append(change)
        self.out.tally(tp).changes.append(change)
        key = change.user_id.encode()
        outputs = self.out.outputs.setdefault(tp, [])
        # compact: orjson's bytes keep the buffer it grew (8 KB for a ~900-byte change),
        # and a batch holds every output until it is published.
        value = compact(orjson.dumps(change.to_json()))
        outputs.append(OutputRecord(self.step.output_topic, key, value))
        if change.tier is not None:
            current = compact(orjson.dumps(change.current()))
            outputs.append(OutputRecord(self.step.tiers_topic, key, current))

    def take_decisions(self) -> None:
        """Score the batch, take its decisions, and lay out what it publishes, in order."""
        self.run.finish()
        outputs = self.out.outputs
        for tp, item in self.sequence:
            if isinstance(item, OutputRecord):
                outputs.setdefault(tp, []).append(item)
                continue
            if item.resolved:
                self.count_resolved(tp, item.resolved)
            if item.change is not None:
                self.publish(tp, item.change)
        self.sequence = []

    def finish(self) -> BatchOutcome:
        self.take_decisions()
        out, models = self.out, self.engine.models
        save = SaveSet()
        for (tp, user), state in self.states.items():
            self.write_user(save.at(tp), tp, user, state)
        for tp, user in self.unusable:  # its timers would only fire into nothing again
            save.at(tp).timers_clear.append(user)
        for tp, outs in out.outputs.items():
            save.at(tp).outbox = [pack_outbox(outs)] if outs else []
        for tp, offset in self.applied.items():
            save.at(tp).applied = offset
        for tp, wm in self.watermarks.items():
            if wm > self.loaded.watermarks.get(tp, -1):
                save.at(tp).watermark = wm
        for tp, counts in self.conversions.items():
            save.at(tp).counts.conversions = counts
        self.count_populations(save)
        out.resolved = models.take_resolved()
        out.save = save
        self.step.learning(save, out, self.loaded)
        return out
