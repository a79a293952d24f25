"""Steps 5-7 of the commit protocol taken by the next batch (``Checkpoint(pipelined=True)``,
the service's mode): a batch's outputs are acknowledged while the next one runs, and
nothing is lost, reordered or published before the previous batch's when an
acknowledgement is late or fails. Memory store; the publisher is a sink whose
acknowledgements the test gives (the real producer's are in the integration and crash
tests)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence

import orjson
import pytest

from consumer.service.checkpoint import Checkpoint
from consumer.service.errors import Fenced, PublishError
from consumer.service.records import InputRecord, OutputRecord, unpack_outbox
from consumer.service.state_store import MemoryStateStore
from consumer.tools.replay import LocalOffsets
from tests.batch_step import frozen_step

TP = ("in", 0)
DAY_MS = 86_400_000


class Acks:
    """What :meth:`Broker.send` returns: waited for by the checkpoint."""

    def __init__(self, broker: Broker, records: list[OutputRecord]) -> None:
        self.broker = broker
        self.records = records
        self.waited = False

    def wait(self) -> None:
        self.waited = True
        if self.broker.fail_next:
            self.broker.fail_next = False
            raise PublishError("the broker refused the batch")
        self.broker.acknowledged.extend(self.records)


class Broker:
    """Records what is sent and what is acknowledged (at :meth:`Acks.wait`, or failed)."""

    def __init__(self) -> None:
        self.sent: list[Acks] = []
        self.acknowledged: list[OutputRecord] = []
        self.fail_next = False

    def publish(self, records: Sequence[OutputRecord]) -> None:
        self.send(records).wait()

    def send(self, records: Sequence[OutputRecord]) -> Acks:
        # One publication in flight at a time: the one before must have been waited for.
        assert all(a.waited for a in self.sent), "sent before the last batch was settled"
        acks = Acks(self, list(records))
        self.sent.append(acks)
        return acks


def _records(start: int, n: int) -> list[InputRecord]:
    """``n`` first events of new users: one tier change (and current tier) each."""
    out = []
    for i in range(start, start + n):
        user = f"u{i}"
        value = orjson.dumps(
            {
                "event_id": f"e{i}",
                "user_id": user,
                "event_type": "page_view",
                "timestamp": 1_780_000_000_000 + i,
            }
        )
        out.append(InputRecord(TP[0], TP[1], i, 0, user.encode(), value))
    return out


def _checkpoint(
    store: MemoryStateStore, broker: Broker, steps: list[str]
) -> tuple[Checkpoint, LocalOffsets]:
    offsets = LocalOffsets()
    checkpoint = Checkpoint(
        frozen_step(),
        store,
        offsets,
        broker,
        clock_ms=lambda: 0,
        timer=lambda: 0.0,
        on_step=steps.append,
        pipelined=True,
    )
    return checkpoint, offsets


def _pending(store: MemoryStateStore) -> int:
    """The outputs waiting in the partition's outbox (an entry per batch)."""
    return sum(len(unpack_outbox(entry)) for entry in store.outbox(TP))


def _users(records: Sequence[OutputRecord]) -> list[bytes]:
    return [r.key for r in records if r.topic == "changes" and r.key is not None]


def test_a_batch_is_settled_by_the_next_one_after_its_save() -> None:
    store, broker, steps = MemoryStateStore(), Broker(), []
    checkpoint, offsets = _checkpoint(store, broker, steps)
    checkpoint.recover([TP])
    checkpoint.run_batch(_records(0, 3))
    # sent, not yet acknowledged: still in the outbox, its offsets not committed
    assert _users(broker.sent[0].records) == [b"u0", b"u1", b"u2"]
    assert not broker.sent[0].waited
    assert _pending(store) == 6  # a change and a current tier each
    assert offsets.committed == {}
    steps.clear()
    checkpoint.run_batch(_records(3, 2))
    assert steps.index("save") < steps.index("publish") < steps.index("check")
    assert broker.sent[0].waited and not broker.sent[1].waited
    assert offsets.committed == {TP: 3}
    assert _pending(store) == 4  # the first batch's trimmed, the second's kept
    checkpoint.flush_commits()  # idle: the last batch settled too
    assert _users(broker.acknowledged) == [f"u{i}".encode() for i in range(5)]
    assert store.outbox(TP) == []
    assert offsets.committed == {TP: 5}


def test_a_failed_acknowledgement_loses_nothing_and_keeps_the_order() -> None:
    store, broker, steps = MemoryStateStore(), Broker(), []
    checkpoint, offsets = _checkpoint(store, broker, steps)
    checkpoint.recover([TP])
    checkpoint.run_batch(_records(0, 2))
    broker.fail_next = True
    with pytest.raises(PublishError):
        checkpoint.run_batch(_records(2, 2))  # saved; the first batch's acks failed
    assert len(broker.sent) == 1, "the second batch was sent before the first's acks"
    assert broker.acknowledged == []
    assert _pending(store) == 8  # both batches' outputs wait in the outbox
    assert offsets.committed == {}
    # what the service does after a failure: acquire again, which publishes the outbox
    republished = checkpoint.recover([TP])
    assert republished == 8
    assert _users(broker.acknowledged) == [b"u0", b"u1", b"u2", b"u3"]
    assert store.outbox(TP) == []
    checkpoint.run_batch(_records(4, 1))
    checkpoint.flush_commits()
    assert _users(broker.acknowledged) == [f"u{i}".encode() for i in range(5)]


def test_releasing_a_partition_settles_the_batch_in_flight_first() -> None:
    store, broker, steps = MemoryStateStore(), Broker(), []
    checkpoint, _ = _checkpoint(store, broker, steps)
    checkpoint.recover([TP])
    checkpoint.run_batch(_records(0, 2))
    checkpoint.release([TP])  # another owner may publish next: ours are acknowledged
    assert broker.sent[0].waited
    assert _users(broker.acknowledged) == [b"u0", b"u1"]


def test_without_pipelining_a_batch_settles_itself() -> None:
    store, broker, steps = MemoryStateStore(), Broker(), []
    checkpoint, offsets = _checkpoint(store, broker, steps)
    checkpoint.pipelined = False
    checkpoint.recover([TP])
    checkpoint.run_batch(_records(0, 2))
    assert broker.sent[0].waited and store.outbox(TP) == []
    assert offsets.committed == {TP: 2}
    assert steps[-4:] == ["check", "publish", "commit", "clear"]


def test_acquiring_again_settles_the_batch_in_flight_before_reading_the_outbox() -> None:
    """A resync (acquiring the partitions held) reads the outbox and trims what it
    republished: the batch in flight must be trimmed first, or its own trim would later
    drop the next batch's entries before they are acknowledged."""
    store, broker, steps = MemoryStateStore(), Broker(), []
    checkpoint, _ = _checkpoint(store, broker, steps)
    checkpoint.recover([TP])
    checkpoint.run_batch(_records(0, 2))
    assert checkpoint.recover([TP]) == 0  # nothing left to republish: it was settled
    assert broker.sent[0].waited and store.outbox(TP) == []
    checkpoint.run_batch(_records(2, 2))
    assert _pending(store) == 4  # the second batch's entries, awaiting their acks
    checkpoint.flush_commits()
    assert _users(broker.acknowledged) == [b"u0", b"u1", b"u2", b"u3"]


class MovedOnGroup(LocalOffsets):
    """A group that has moved on without this instance: every commit is refused."""

    def commit(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        raise Fenced("the group rebalanced before the commit")


def test_a_zombie_gives_its_partitions_up_though_the_group_refuses_its_commit() -> None:
    """A stalled instance whose batch was fenced releases the partitions another owner
    took: settling its batch in flight there must not fail on the group's refusal of the
    commit (the new owner reads from the store's applied offsets), nor stop the release."""
    store, broker, steps = MemoryStateStore(), Broker(), []
    checkpoint, _ = _checkpoint(store, broker, steps)
    checkpoint.source = checkpoint.commits.committer = MovedOnGroup()
    checkpoint.recover([TP])
    checkpoint.run_batch(_records(0, 2))
    checkpoint.release([TP])
    assert broker.sent[0].waited and store.held() == {}
    checkpoint.recover([TP])
    checkpoint.run_batch(_records(2, 2))
    with pytest.raises(Fenced):  # in the batch path the refusal is the batch's to report
        checkpoint.flush_commits()


def test_a_batchs_outputs_are_one_compressed_outbox_entry_read_back_in_order() -> None:
    """The outputs of a batch's partition go to its outbox as one entry, compressed (a
    tenth of their frames' bytes or less for tier changes); a new owner publishes them
    as they were, after an entry written by an earlier version (one frame)."""
    store, broker, steps = MemoryStateStore(), Broker(), []
    checkpoint, _ = _checkpoint(store, broker, steps)
    checkpoint.recover([TP])
    earlier = OutputRecord("changes", b"u-earlier", b'{"tier":"vip"}')
    store.outboxes[TP] = [earlier.to_frame()]  # left by an earlier version's batch
    assert checkpoint.recover([TP]) == 1
    checkpoint.run_batch(_records(0, 40))
    (entry,) = store.outbox(TP)
    sent = broker.sent[-1].records
    assert unpack_outbox(entry) == sent and len(sent) == 80
    assert len(entry) * 10 < sum(len(r.to_frame()) for r in sent)
    broker.fail_next = True  # its acknowledgement fails: the next owner publishes it
    with pytest.raises(PublishError):
        checkpoint.flush_commits()
    assert checkpoint.recover([TP]) == 80
    assert broker.acknowledged == [earlier, *sent]


def _framed(records: Sequence[OutputRecord]) -> bytes:
    """The records' frames, each after its length: a bundle's content, uncompressed."""
    return b"".join(struct.pack(">I", len(r.to_frame())) + r.to_frame() for r in records)


def test_outbox_bundles_are_zstd_and_an_earlier_versions_zlib_bundle_is_published() -> None:
    """A bundle is compressed by Zstandard (smaller than zlib's of the same frames, and
    in a third of the CPU: docs/performance.md); a bundle an earlier version compressed
    with zlib is still published by the next owner, in order, before the new ones."""
    store, broker, steps = MemoryStateStore(), Broker(), []
    checkpoint, _ = _checkpoint(store, broker, steps)
    checkpoint.recover([TP])
    earlier = [OutputRecord("changes", f"u{i}".encode(), b'{"tier":"vip"}') for i in range(3)]
    store.outboxes[TP] = [b"\xb5" + zlib.compress(_framed(earlier), 1)]  # an earlier version's
    assert checkpoint.recover([TP]) == 3
    checkpoint.run_batch(_records(0, 40))
    (entry,) = store.outbox(TP)
    sent = broker.sent[-1].records
    assert entry[:1] == b"\xb6" and len(entry) < len(zlib.compress(_framed(sent), 1))
    broker.fail_next = True
    with pytest.raises(PublishError):
        checkpoint.flush_commits()
    assert checkpoint.recover([TP]) == 80
    assert broker.acknowledged == [*earlier, *sent]
