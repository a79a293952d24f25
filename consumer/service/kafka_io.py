"""Thin wrappers over kafka-python: the input source, the publisher, topic creation.

The rest of the service sees :class:`~consumer.service.records.InputRecord` and
:class:`~consumer.service.records.OutputRecord` only; client errors are re-raised as the
service's own (:mod:`consumer.service.errors`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
)
from kafka.protocol.consumer.offsets import IsolationLevel
from kafka.structs import OffsetAndMetadata

from consumer.service.acked_sends import AckedSends
from consumer.service.bounded_call import BoundedCall
from consumer.service.client_close import close_in_background, close_quietly
from consumer.service.errors import (
    BrokerError,
    BrokerUnavailable,
    ClientWedged,
    Fenced,
    PartitionStalled,
    PublishError,
)
from consumer.service.kafka_connection import KafkaConnection
from consumer.service.partitioning import key_hash
from consumer.service.record_appender import Appender, appender
from consumer.service.records import InputRecord, KafkaOffsets, OutputRecord
from consumer.service.stall_watch import StallWatch

log = logging.getLogger(__name__)
Partition = tuple[str, int]
T = TypeVar("T")

#: How long one offset commit may wait. kafka-python's default is the request timeout
#: (305 s): with the group's coordinator broker killed, the loop sat that long in one
#: commit. Failing sooner lets the loop retry the batch (it is saved: nothing is applied
#: twice), and the retry asks the brokers for the coordinator that took over.
COMMIT_TIMEOUT_MS = 15_000
#: What a client call may take beyond its own timeout before the client counts as wedged
#: (:mod:`consumer.service.bounded_call`): ``TIERSTREAM_KAFKA_CALL_TIMEOUT_S``.
CALL_TIMEOUT_S = 30.0
#: Each request of the admin client that reads offsets and partition counts.
ADMIN_TIMEOUT_S = 10.0
#: How long a held partition may go unread while the broker has records past the
#: consumer's position (:mod:`consumer.service.stall_watch`): ``TIERSTREAM_KAFKA_STALL_S``.
STALL_S = 60.0
#: How often a group member heartbeats (at most; a third of the session timeout if that
#: is shorter). A member hears that the group rebalances (a member joined or left) only
#: in a heartbeat's answer, and a joining member is given nothing until every other one
#: has heard and rejoined: with heartbeats at a third of the default 10-s session, a
#: second instance started beside a first one waited up to 3.3 s while the first read
#: alone (docs/performance.md, "Heartbeats every half second").
HEARTBEAT_S = 0.5
#: How long the broker may hold a fetch that finds no records (kafka-python's default is
#: 500 ms). kafka-python keeps one fetch in flight per broker and leaves out of it the
#: partitions whose records it already holds (unreturned by the last poll, or just
#: arrived on its network thread): then the fetch may ask for idle partitions alone (the
#: forget requests' topic), the broker holds it this long, and the busy partitions'
#: records wait behind it. At 5,000 new users a second that was some 1,300 records of an
#: instance half a second late at once, in 3 of 4 runs (docs/performance.md, "Fetches
#: held for idle partitions"). An idle instance fetches this often instead: 2.5% of a
#: core against 1% at 500 ms. ``TIERSTREAM_KAFKA_CLIENT_OPTIONS`` may set another.
FETCH_WAIT_MS = 100


class _WhyNot(logging.Handler):
    """What kafka-python logs while a client connects. Its exception says only "Unable to
    bootstrap", the same for an unreachable cluster, a refused password and an untrusted
    certificate; the reason is in its connection logs, kept here (and not shown)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 100:
            self.messages.append(record.getMessage())

    def cause(self, kafka: KafkaConnection) -> str | None:
        """The reason a user can act on, or None."""
        text = "\n".join(self.messages)
        if "SaslAuthenticationFailed" in text or "Authentication failed" in text:
            return (
                f"the brokers refused the {kafka.sasl_mechanism} login of user "
                f"{kafka.sasl_username!r}: check TIERSTREAM_KAFKA_SASL_USERNAME and the password"
            )
        found = re.search(r"certificate verify failed: ([^(\n]+)", text)
        if found:
            return (
                f"the brokers' TLS certificate is not trusted ({found.group(1).strip()}): set "
                "TIERSTREAM_KAFKA_SSL_CAFILE to the CA that signed it"
            )
        if "Handshake failed" in text or "WRONG_VERSION_NUMBER" in text:
            return "the TLS handshake failed: check TIERSTREAM_KAFKA_SECURITY_PROTOCOL and the port"
        return None


@contextlib.contextmanager
def _connecting() -> Iterator[_WhyNot]:
    """Keep kafka-python's connection errors while a client is made (see :class:`_WhyNot`):
    the user gets one line saying why, not the client's log lines."""
    why = _WhyNot()
    logger = logging.getLogger("kafka")
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(why)
    try:
        yield why
    finally:
        logger.removeHandler(why)
        logger.propagate = propagate


def _unreachable(
    kafka: KafkaConnection, exc: Exception, why: _WhyNot | None = None
) -> BrokerUnavailable:
    cause = why.cause(kafka) if why is not None else None
    if cause:
        return BrokerUnavailable(f"cannot use Kafka at {kafka.describe()}: {cause}")
    hint = (
        "check the address, the TLS and SASL settings (TIERSTREAM_KAFKA_*), and the "
        "client's credentials"
        if kafka.security_protocol != "PLAINTEXT"
        else "start it (make stack-up) or set TIERSTREAM_KAFKA_BOOTSTRAP"
    )
    return BrokerUnavailable(f"cannot reach Kafka at {kafka.describe()} ({exc}); {hint}")


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    """Notes what the group assigns and revokes. The consumer calls it from its network
    thread, which must not block: the loop acts on the notes after each poll."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assigned: set[Partition] = set()
        self._revoked: set[Partition] = set()

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        with self._lock:
            self._revoked |= {(tp.topic, tp.partition) for tp in revoked}

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        with self._lock:
            self._assigned |= {(tp.topic, tp.partition) for tp in assigned}

    def take(self) -> tuple[set[Partition], set[Partition]]:
        with self._lock:
            out = (self._assigned, self._revoked)
            self._assigned, self._revoked = set(), set()
        return out


#: Commit errors that mean the group moved on without this member: fencing, not failure.
_FENCING_ERRORS = (
    CommitFailedError,
    RebalanceInProgressError,
    IllegalGenerationError,
    UnknownMemberIdError,
)


class EventSource:
    """A consumer-group member on the input topic; offsets are committed explicitly.

    Every call that waits on the brokers is bounded (:mod:`consumer.service.bounded_call`):
    a poll or a commit that does not come back within its own timeout plus
    ``call_timeout_s`` raises :class:`~consumer.service.errors.ClientWedged`, and the
    consumer is replaced: the old one is closed in the background (with static
    membership the new one takes its place in the group at once; without, the group
    moves its partitions when it leaves or its session times out) and the loop acquires
    what the group gives the new one, as after any failure. So is a consumer that stops
    reading a partition it holds (:mod:`consumer.service.stall_watch`): still for
    ``stall_s`` while the broker has records past its position (0: not watched).
    """

    def __init__(
        self,
        kafka: KafkaConnection | str,
        topic: str,
        group_id: str,
        *,
        max_poll_records: int,
        also: Sequence[str] = (),
        instance_id: str = "",
        session_timeout_s: float = 10.0,
        call_timeout_s: float = CALL_TIMEOUT_S,
        stall_s: float = STALL_S,
    ) -> None:
        self.topic = topic
        #: Topics read beside the input topic (the forget requests).
        self.topics = [topic, *also]
        self.group_id = group_id
        self._kafka = kafka = KafkaConnection.of(kafka)
        self._admin: KafkaAdminClient | None = None
        self._rebalances = _Rebalances()
        self._call_timeout_s = call_timeout_s
        self._calls = BoundedCall(f"the Kafka consumer of group {group_id}", limit_s=call_timeout_s)
        self._admin_calls = BoundedCall(
            f"the Kafka admin client of group {group_id}", limit_s=ADMIN_TIMEOUT_S + call_timeout_s
        )
        #: Consumers replaced because a call of theirs overran.
        self.replaced = 0
        #: The next offset to read per partition, as far as this object saw (seeks and
        #: polls): the consumer's own ``position()`` may wait on the brokers unbounded.
        self._next: dict[Partition, int] = {}
        self._stalls = StallWatch(stall_s) if stall_s > 0 else None
        self._config = kafka.config(
            KafkaConsumer,
            group_id=group_id,
            group_instance_id=instance_id or None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_poll_records,
            # Larger than the biggest batch we may need to process between polls.
            max_poll_interval_ms=300_000,
            session_timeout_ms=round(session_timeout_s * 1000),
            # The broker expects several heartbeats per session timeout; the members
            # hear of a rebalance at their next one.
            heartbeat_interval_ms=round(min(HEARTBEAT_S, session_timeout_s / 3) * 1000),
            fetch_max_wait_ms=FETCH_WAIT_MS,
            isolation_level="read_committed",
            client_id=f"tierstream-{group_id}",
        )
        with _connecting() as why:
            try:
                self._consumer: KafkaConsumer | None = self._new_consumer()
            except KafkaError as exc:
                raise _unreachable(kafka, exc, why) from None

    def _new_consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(**self._config)
        consumer.subscribe(self.topics, listener=self._rebalances)
        #: Whether the current consumer knows the subscribed topics (:meth:`_learn_topics`,
        #: in a bounded call at its first poll).
        self._knows_topics = False
        return consumer

    def _learn_topics(self, consumer: KafkaConsumer) -> None:
        """Have the new consumer know the subscribed topics' partitions before its first
        poll joins the group: kafka-python joins with the metadata it has, a leader that
        lacks the topics assigns nothing, and the group forms a second time once the
        metadata comes (the other members hear of it at their next heartbeat, and no one
        is given partitions until they have). kafka-python fetches every topic's
        metadata the client may see for it: once per consumer."""
        for topic in self.topics:  # fetched if not known (a topic that does not exist
            consumer.partitions_for_topic(topic)  # is left to the group, as before)

    def _member(self) -> KafkaConsumer:
        """The consumer; a new one if the last was replaced (BrokerError if the brokers
        cannot be reached now)."""
        if self._consumer is None:
            try:
                self._consumer = self._new_consumer()
            except KafkaError as exc:
                raise BrokerError(f"joining group {self.group_id} again: {exc}") from exc
        return self._consumer

    def _replace(self, exc: ClientWedged) -> None:
        """Leave the wedged consumer behind: closed on a thread of its own (a close may
        wedge too), a new one made at the next call."""
        old, self._consumer = self._consumer, None
        self.replaced += 1
        self._next.clear()
        log.warning(
            "%s; replacing the consumer (the group gives its partitions again)",
            exc,
            extra={"event": "consumer_replaced", "group": self.group_id},
        )
        if old is not None:
            close_in_background(old, f"closing a wedged consumer of {self.group_id}")

    def poll(
        self, timeout_ms: int, max_records: int | None = None, *, input_only: bool = False
    ) -> list[InputRecord]:
        """The next records (at most ``max_records``; the consumer's
        ``max_poll_records`` if None), in offset order within each partition;
        ``input_only``: of the input topic only (the other topics' partitions are
        paused for the poll, so the fetch it leaves in flight asks for none of them)."""
        consumer = self._member()
        try:
            if not self._knows_topics:
                self._calls(self._learn_topics, consumer)
                self._knows_topics = True
            batches = self._calls(
                partial(self._input_poll, consumer) if input_only else consumer.poll,
                timeout_ms=timeout_ms,
                max_records=max_records,
                limit_s=timeout_ms / 1000 + self._call_timeout_s,
                expected_s=timeout_ms / 1000,
            )
        except ClientWedged as exc:
            self._replace(exc)
            raise
        except KafkaError as exc:
            raise BrokerError(f"polling {self.topic}: {exc}") from exc
        out: list[InputRecord] = []
        for tp, records in batches.items():
            out.extend(
                InputRecord(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value)
                for r in records
            )
            if records:
                self._next[(tp.topic, tp.partition)] = records[-1].offset + 1
        if self._stalls is not None:
            self._watch(consumer, self._stalls)
        return out

    def _input_poll(self, consumer: KafkaConsumer, timeout_ms: int, max_records: int | None) -> Any:
        """A poll with the other topics' partitions paused: the fetch kafka-python
        sends before returning leaves them out, so it cannot ask for idle partitions
        alone (the broker would hold it ``FETCH_WAIT_MS`` and the input's next records
        behind it). Resumed after, those the poll's rebalance left assigned."""
        others = {tp for tp in consumer.assignment() if tp.topic != self.topic}
        consumer.pause(*others)
        try:
            return consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        finally:
            consumer.resume(*(others & consumer.paused()))

    def _watch(self, consumer: KafkaConsumer, stalls: StallWatch) -> None:
        """Replace the consumer if it stopped reading a partition whose records wait on
        the broker (PartitionStalled); an idle partition is only watched on."""
        now = time.monotonic()
        positions = {}
        for tp in consumer.assignment():
            where = _client_position(consumer, tp)
            if where is None:
                where = self._next.get((tp.topic, tp.partition))
            if where is not None:
                positions[(tp.topic, tp.partition)] = where
        suspects = stalls.observe(positions, now)
        if not suspects:
            return
        waiting = _queued(consumer) or set()
        if waiting:  # fetched, waiting their turn in the client: not stalled
            stalls.idle([tp for tp in suspects if TopicPartition(*tp) in waiting], now)
            suspects = [tp for tp in suspects if TopicPartition(*tp) not in waiting]
            if not suspects:
                return
        try:
            ends = self._listed([TopicPartition(*tp) for tp in suspects], OffsetSpec.LATEST)
        except (KafkaError, ClientWedged) as err:  # cannot tell now: asked again later
            if isinstance(err, KafkaError):
                self._drop_admin(wait=False)
            log.debug("reading the end offsets of %s: %s", suspects, err)
            stalls.idle(suspects, now)
            return
        behind = [
            (tp, positions[tp], ends[TopicPartition(*tp)])
            for tp in suspects
            if ends[TopicPartition(*tp)] > positions[tp]
        ]
        stalls.idle([tp for tp in suspects if tp not in {b[0] for b in behind}], now)
        if behind:
            stalled = PartitionStalled(
                "the Kafka consumer stopped reading "
                + ", ".join(
                    f"{t}:{p} (at offset {at} for {stalls.quiet_for((t, p), now):.0f} s, "
                    f"the broker has {end - at} more)"
                    for (t, p), at, end in behind
                )
            )
            self._replace(stalled)
            raise stalled

    def take_rebalance(self) -> tuple[set[Partition], set[Partition]]:
        """Partitions assigned and revoked by the group since the last call."""
        return self._rebalances.take()

    def assignment(self) -> set[Partition]:
        """Partitions this member currently owns (none while a new consumer joins)."""
        if self._consumer is None:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def commit(self, next_offsets: Mapping[Partition, int]) -> None:
        """Commit, for each partition, the offset of the next record to read. Fenced if
        the group has moved on without this member (its offsets were not committed)."""
        consumer = self._member()
        try:
            self._calls(
                consumer.commit,
                {
                    TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                    for (t, p), o in next_offsets.items()
                },
                timeout_ms=COMMIT_TIMEOUT_MS,
                limit_s=COMMIT_TIMEOUT_MS / 1000 + self._call_timeout_s,
            )
        except ClientWedged as exc:
            self._replace(exc)
            raise
        except _FENCING_ERRORS as exc:
            raise Fenced(f"the group rebalanced before the commit: {exc}") from exc
        except KafkaError as exc:
            raise BrokerError(f"committing offsets: {exc}") from exc

    # Offsets are looked up through an admin client, never through the member consumer:
    # its blocking lookups wait on the group coordinator, and can stall (past their own
    # timeouts) while the group rebalances.

    def _offsets(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = self._admin_calls(
                KafkaAdminClient,
                **self._kafka.config(
                    KafkaAdminClient,
                    client_id=f"tierstream-{self.group_id}-offsets",
                    request_timeout_ms=round(ADMIN_TIMEOUT_S * 1000),
                ),
            )
        return self._admin

    def _ask(self, call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """An admin call, bounded; a wedged admin client is dropped (a new one is made
        at the next call)."""
        try:
            return self._admin_calls(call, *args, **kwargs)
        except ClientWedged:
            self._drop_admin(wait=False)
            raise

    def _committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        admin = self._offsets()
        found = self._ask(admin.list_group_offsets, {self.group_id: list(tps)})
        offsets = found.get(self.group_id, {})
        out: dict[TopicPartition, int | None] = {}
        for tp in tps:
            meta = offsets.get(tp)
            out[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
        return out

    def _listed(self, tps: Sequence[TopicPartition], spec: OffsetSpec) -> dict[TopicPartition, int]:
        admin = self._offsets()
        found = self._ask(
            admin.list_partition_offsets,
            {tp: spec for tp in tps},
            isolation_level=IsolationLevel.READ_COMMITTED,
        )
        return {tp: found[tp].offset for tp in tps}

    def positions(self, partitions: Sequence[Partition]) -> dict[Partition, KafkaOffsets]:
        """The group's committed offset and the log's first offset, per partition."""
        tps = [TopicPartition(t, p) for t, p in partitions]
        try:
            first = self._listed(tps, OffsetSpec.EARLIEST)
            committed = self._committed(tps)
        except KafkaError as exc:
            self._drop_admin()
            raise BrokerError(f"reading offsets of {sorted(partitions)}: {exc}") from exc
        return {(tp.topic, tp.partition): KafkaOffsets(committed[tp], first[tp]) for tp in tps}

    def partition_count(self) -> int | None:
        """How many partitions the input topic has now, asked of the brokers (the
        member's metadata may be minutes old); None if it does not exist yet."""
        try:
            return self._ask(topic_partition_count, self._offsets(), self.topic)
        except KafkaError as exc:
            self._drop_admin()
            raise BrokerError(f"reading the partition count of {self.topic}: {exc}") from exc

    def seek(self, partition: Partition, offset: int) -> None:
        """Read ``partition`` from ``offset`` on."""
        self._member().seek(TopicPartition(*partition), offset)
        self._next[partition] = offset

    def rewind(self, partitions: Iterable[Partition]) -> None:
        """Read ``partitions`` again from the group's committed offsets (or their start)."""
        parts = sorted(partitions)
        if not parts:
            return
        for tp, where in self.positions(parts).items():
            self.seek(tp, where.first if where.committed is None else where.committed)

    def group_lag(self) -> dict[Partition, int]:
        """Records of the topics read that the group has not committed, per partition (all
        partitions, whoever owns them); a partition never committed counts from its start."""
        try:
            admin = self._offsets()
            tps = [
                TopicPartition(t, p)
                for t in self.topics
                for p in range(self._ask(topic_partition_count, admin, t) or 0)
            ]
            ends = self._listed(tps, OffsetSpec.LATEST)
            firsts = self._listed(tps, OffsetSpec.EARLIEST)
            committed = self._committed(tps)
        except KafkaError as exc:
            self._drop_admin()
            raise BrokerError(f"reading the group's lag on {self.topics}: {exc}") from exc
        lag = {}
        for tp in tps:
            done = committed[tp]
            lag[(tp.topic, tp.partition)] = max(
                0, ends[tp] - (firsts[tp] if done is None else done)
            )
        return lag

    def overdue_s(self) -> float:
        """How long a call of this source to the brokers (a poll past its own wait, a
        commit, an admin request) has been waiting for its answer beyond what it takes by
        design, in seconds; 0 when none is. Safe from any thread (/readyz)."""
        return max(self._calls.overdue_s(), self._admin_calls.overdue_s())

    def reachable(self) -> bool:
        """Whether a broker answers now (readiness); never raises."""
        try:
            self._ask(self._offsets().list_topics)
        except (KafkaError, OSError, BrokerError):
            self._drop_admin()
            return False
        return True

    def _drop_admin(self, *, wait: bool = True) -> None:
        admin, self._admin = self._admin, None
        if admin is None:
            return
        if wait:
            close_quietly(admin)
        else:  # a wedged client's close may wedge too
            close_in_background(admin)

    def lags(self) -> dict[Partition, int]:
        """Records not yet read per owned partition of the input topic, from the last
        fetch (a partition whose end or position is not known yet is left out). Local:
        no call to the brokers."""
        out: dict[Partition, int] = {}
        if self._consumer is None:
            return out
        for tp in self._consumer.assignment():
            where = self._next.get((tp.topic, tp.partition))
            if tp.topic != self.topic or where is None:
                continue
            high = self._consumer.highwater(tp)
            if high is not None:
                out[(tp.topic, tp.partition)] = max(0, high - where)
        return out

    def close(self) -> None:
        """Leave the group (offsets are committed per batch, not here)."""
        self._drop_admin()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                self._calls(consumer.close, autocommit=False)
            finally:
                self._calls.close()
                self._admin_calls.close()


def _client_position(consumer: KafkaConsumer, tp: TopicPartition) -> int | None:
    """The offset ``consumer`` fetches next for ``tp``, read without a call to the
    brokers (``KafkaConsumer.position`` may wait on them); None if not known. It is past
    the control records of transactions, which the service never sees as records."""
    try:
        position = consumer._subscription.assignment[tp].position
    except (AttributeError, KeyError):  # another kafka-python: the caller falls back
        return None
    return None if position is None else int(position.offset)


def _queued(consumer: KafkaConsumer) -> set[TopicPartition] | None:
    """The partitions whose fetched records wait in the client's queue for the polls to
    come (a catch-up drains one partition's fetch over several polls while the others
    wait: their positions stand still, and they are not stalled). Records the client
    parks for a paused partition are not queued: the service pauses none, so a partition
    parked is stalled. Read without a call to the brokers; None if this kafka-python
    keeps its queue elsewhere."""
    try:
        fetcher = consumer._fetcher
        out = {fetch.topic_partition for fetch in fetcher._completed_fetches.copy()}
        current = fetcher._next_partition_records
    except AttributeError:  # another kafka-python: nothing is known to wait
        return None
    if current:
        out.add(current.topic_partition)
    return out


class Publisher:
    """An idempotent producer; :meth:`publish` returns once every record is acknowledged;
    :meth:`send` hands records over and returns at once, their acknowledgements awaited
    on a thread of its own (:meth:`Sent.wait`): a batch's outputs are acknowledged while
    the service reads and applies the next batch.

    A producer that failed (a timeout, a fatal error such as an exhausted sequence) is
    closed and a new one made for the next attempt: a producer in a fatal state would fail
    every later send, and the outputs wait in the outbox meanwhile.
    """

    def __init__(
        self,
        kafka: KafkaConnection | str,
        *,
        max_request_size: int = 4 * 1024 * 1024,
        headers: Mapping[str, list[tuple[str, bytes]]] | None = None,
    ) -> None:
        self._kafka = KafkaConnection.of(kafka)
        #: Kafka headers by topic (:mod:`consumer.service.headers`).
        self._headers = dict(headers or {})
        self._config = self._kafka.config(
            KafkaProducer,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            # publish() flushes at the end of every batch: a batch's records for one
            # partition go out as one record batch. The default 16 KB made a new batch,
            # and a wake-up of the sender thread, every ~18 tier changes: 1.7x slower
            # (docs/performance.md "Publishing a batch").
            batch_size=min(1024 * 1024, max_request_size),
            max_request_size=max_request_size,
            client_id="tierstream-publisher",
        )
        self._producer: KafkaProducer | None = None
        #: Hands records to the producer's accumulator (None: through ``send``).
        self._append: Appender | None = None
        self._start()
        #: Flushes the producer and checks each record's acknowledgement for :meth:`send`.
        self._acks = ThreadPoolExecutor(1, thread_name_prefix="tierstream-publish-acks")
        #: When the records awaiting acknowledgement were handed over (monotonic), None
        #: when none is awaited: read by other threads (:meth:`unacknowledged_for`).
        self._handed_at: float | None = None

    def _start(self) -> KafkaProducer:
        """A new producer, and the appender that feeds it."""
        with _connecting() as why:
            try:
                producer = KafkaProducer(**self._config)
            except KafkaError as exc:
                raise _unreachable(self._kafka, exc, why) from None
        self._producer, self._append = producer, appender(producer, self._headers)
        return producer

    def publish(self, records: Sequence[OutputRecord], *, timeout_s: float = 60.0) -> None:
        """Send ``records`` in order and wait for all acknowledgements; raise PublishError."""
        self.send(records, timeout_s=timeout_s).wait()

    def send(self, records: Sequence[OutputRecord], *, timeout_s: float = 60.0) -> Sent:
        """Hand ``records`` to the producer in order and flush them: :meth:`Sent.wait`
        returns once every one is acknowledged (or raises PublishError). Not while an
        earlier :class:`Sent` is still waited for: one publication in flight at a time."""
        # From here: the producer may block for a topic's metadata as well.
        self._handed_at = time.monotonic()
        try:
            producer = self._producer
            if producer is None:
                producer = self._start()
            route = _Routes(producer)
            headers = self._headers
            append = self._append
            futures = []
            for r in records:
                key = r.key
                partition = route(r.topic, key)
                future = None
                if append is not None and partition is not None and key is not None:
                    future = append(r.topic, partition, key, r.value)
                if future is None:
                    future = producer.send(
                        r.topic,
                        key=key,
                        value=r.value,
                        headers=headers.get(r.topic),
                        partition=partition,
                    )
                futures.append(future)
        except BaseException as exc:
            self._handed_at = None
            if not isinstance(exc, (KafkaError, BrokerUnavailable)):
                raise
            self._discard()
            raise PublishError(f"publishing failed: {exc}") from exc
        return Sent(self._acks.submit(self._acknowledged, producer, futures, timeout_s))

    def unacknowledged_for(self) -> float:
        """How long the records of the last :meth:`send` have been awaiting their
        acknowledgement (from the moment they were handed over, a wait for a topic's
        metadata included), in seconds; 0 when none is awaited. A broker that is down or
        hangs keeps it growing until the wait gives up (its ``timeout_s``). Safe from any
        thread."""
        handed_at = self._handed_at
        return 0.0 if handed_at is None else time.monotonic() - handed_at

    def _acknowledged(self, producer: KafkaProducer, futures: list[Any], timeout_s: float) -> None:
        try:
            producer.flush(timeout=timeout_s)
            for fut in futures:
                fut.get(timeout=0)
        except (KafkaError, BrokerUnavailable) as exc:
            if self._producer is producer:
                self._discard()
            raise PublishError(f"publishing failed: {exc}") from exc
        finally:
            self._handed_at = None

    def _discard(self) -> None:
        producer, self._producer, self._append = self._producer, None, None
        if producer is not None:
            close_quietly(producer)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and close."""
        self._acks.shutdown(wait=False)
        if self._producer is not None:
            self._producer.close(timeout=timeout_s)


class Sent:
    """Records handed to the producer (:meth:`Publisher.send`)."""

    __slots__ = ("_acks",)

    def __init__(self, acks: Future[None]) -> None:
        self._acks = acks

    def wait(self) -> None:
        """Return once every record is acknowledged; raise PublishError if one is not."""
        self._acks.result()


class _Routes:
    """The partition of each record of one :meth:`Publisher.publish`: the one Kafka's
    default partitioner would choose (murmur2 of the key over the topic's partitions),
    computed here once per key and topic count; kafka-python's partitioner looks the
    topic's metadata up three times per record, a third of the cost of a send.

    A record without a key is left to the producer (``None``: its own choice)."""

    __slots__ = ("_counts", "_hashes", "_producer")

    def __init__(self, producer: KafkaProducer) -> None:
        self._producer = producer
        self._counts: dict[str, list[int]] = {}
        self._hashes: dict[bytes, int] = {}

    def __call__(self, topic: str, key: bytes | None) -> int | None:
        if key is None:
            return None
        partitions = self._counts.get(topic)
        if partitions is None:
            # Waits for the topic's metadata if the producer has none (as send would).
            partitions = self._counts[topic] = sorted(self._producer.partitions_for(topic))
        if not partitions:
            return None  # the producer's own partitioner says what is wrong
        index = self._hashes.get(key)
        if index is None:
            index = self._hashes[key] = key_hash(key)
        return partitions[index % len(partitions)]


def _admin(kafka: KafkaConnection) -> KafkaAdminClient:
    with _connecting() as why:
        try:
            return KafkaAdminClient(**kafka.config(KafkaAdminClient, client_id="tierstream-admin"))
        except KafkaError as exc:
            raise _unreachable(kafka, exc, why) from None


def ensure_topics(
    kafka: KafkaConnection | str,
    topics: Sequence[str],
    *,
    partitions: int,
    like: str | None = None,
    replication: int = 0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create missing ``topics``; ``partitions`` 0 means as many as topic ``like`` has;
    ``replication`` 0 means the brokers' default; ``configs`` gives topic configs by topic
    (e.g. ``cleanup.policy=compact``)."""
    kafka = KafkaConnection.of(kafka)
    admin = _admin(kafka)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        count = partitions
        if count <= 0:
            count = (topic_partition_count(admin, like) if like and like in existing else None) or 1
        spec: dict[str, dict[str, Any]] = {
            t: {
                "num_partitions": count,
                "replication_factor": replication or -1,
                "configs": dict((configs or {}).get(t, {})),
            }
            for t in missing
        }
        try:
            admin.create_topics(spec, wait_for_metadata=True)
            log.info("created topics %s with %d partitions", ", ".join(missing), count)
        except TopicAlreadyExistsError:
            pass  # another instance created it first
    finally:
        admin.close()


def topic_partition_count(admin: KafkaAdminClient, topic: str) -> int | None:
    """How many partitions ``topic`` has, asked of the brokers (None: no such topic)."""
    for info in admin.describe_topics([topic]):
        if (info.get("name") or info.get("topic")) == topic and info["partitions"]:
            return len(info["partitions"])
    return None


def topic_and_group(kafka: KafkaConnection | str, topic: str, group: str) -> tuple[int | None, int]:
    """How many partitions ``topic`` has now (None: no such topic), and how many members
    consumer group ``group`` has (0: no instance is up)."""
    admin = _admin(KafkaConnection.of(kafka))
    try:
        listed = {g["group_id"]: g for g in admin.list_groups()}
        members = 0
        if group in listed:
            members = len(admin.describe_groups([group])[group]["members"])
        return topic_partition_count(admin, topic), members
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"asking the brokers about {topic} and group {group}: {exc}"
        ) from exc
    finally:
        admin.close()


def produce_records(
    kafka: KafkaConnection | str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    partitions: int = 1,
    progress: Callable[[int], None] | None = None,
    timeout_s: float = 300.0,
    resend_after_s: float = 30.0,
) -> int:
    """Produce ``(key, value)`` pairs to ``topic`` (created with ``partitions`` if missing)
    and return once the brokers acknowledged every one (what a producer left undelivered
    ``resend_after_s`` after it was handed over is sent again by a new one:
    :mod:`consumer.service.acked_sends`); NotAcknowledged if they refuse a record or
    ``timeout_s`` passes after the last was handed over."""
    kafka = KafkaConnection.of(kafka)
    ensure_topics(kafka, [topic], partitions=partitions)
    config = kafka.config(
        KafkaProducer,
        acks="all",
        linger_ms=20,
        batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
        client_id="tierstream-generate",
    )

    def new() -> KafkaProducer:
        with _connecting() as why:
            try:
                return KafkaProducer(**config)
            except KafkaError as exc:
                raise _unreachable(kafka, exc, why) from None

    sends = AckedSends(new, topic)
    try:
        for key, value in records:
            sends.send(key, value)
            if progress and sends.sent % 1000 == 0:
                progress(sends.sent)
        sends.finish(timeout_s, resend_after_s=resend_after_s)
    finally:
        sends.close()
    if progress:
        progress(sends.sent)
    return sends.sent
