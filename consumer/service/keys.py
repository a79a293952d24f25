"""Every Redis key the service writes, and how long it lives.

Keys are laid out like the input: everything of one input partition carries that
partition's hash tag, so one batch's write for a partition stays in one Redis Cluster
slot, and its MULTI/EXEC never crosses slots (Kafka Streams partitions its state stores
like its input, for the same reason). A user lives in the partition their records are
routed to (the record key is the user id; Kafka's default partitioner). The models have
a slot of their own.

``<p>`` is the key prefix setting; ``T`` is the tag of one input partition,
``{<p>:<topic>:<partition>}``; ``M`` is the tag of the models, ``{<p>:model}``.

=========================== ============================================ ===============
key                         value                                        lifetime
=========================== ============================================ ===============
``<p>:T:u:<user_id>``       user state, binary (``state_codec``; JSON    until the engine
                            from earlier versions is still read)         ends the user
                                                                         (silent for the
                                                                         state TTL, event
                                                                         time) or forget
``<p>:T:pop``               hash: tier -> users of the partition in it   forever
                            (moves in the transaction of the states)
``<p>:T:conv``              hash: ``group:outcome:tier`` -> propensity   forever
                            labels resolved (conversion per tier)
``<p>:T:applied``           last input offset applied to state           forever
``<p>:T:outbox``            list of outputs saved, not yet published:    until published
                            an entry per batch (``records.pack_outbox``)
``<p>:T:wm``                event-time watermark of the partition        forever
``<p>:T:timers``            sorted set: user -> when their timer fires   while armed
                            (label deadline, re-score)
``<p>:T:epoch``             owner epoch of the partition: INCR by each   forever
                            new owner; every save and outbox trim checks
                            it (a zombie is fenced)
``<p>:M``                   the global model version, JSON               forever
``<p>:M:contrib:<inst>``    an instance's learning since the model, JSON until folded
``<p>:M:contributors``      set of instance ids that contributed         members leave
                                                                         when folded
``<p>:M:partitions``        hash: topic -> its partition count when the  forever
                            state was first written (users are found by
                            it; a change is refused until repartitioned)
``<p>:M:counted``           set of topics whose ``pop`` hashes count     forever
                            every user (all but states written before
                            tierstream counted them; ``state recount``)
=========================== ============================================ ===============

A key prefix or topic must not contain ``{`` or ``}`` (the settings refuse such a prefix;
Kafka refuses such a topic): the tag is the first ``{...}`` of the key.

>>> keys = KeySpace("ts")
>>> keys.user("user-events", 3, "u42"), keys.applied("user-events", 3)
('ts:{ts:user-events:3}:u:u42', 'ts:{ts:user-events:3}:applied')
>>> keys.model, keys.contribution("pod-0"), keys.partitions
('ts:{ts:model}', 'ts:{ts:model}:contrib:pod-0', 'ts:{ts:model}:partitions')

Every key of a partition is in one slot, and the models in another:

>>> from redis.crc import key_slot
>>> part = [keys.user("user-events", 3, "u42"), keys.timers("user-events", 3),
...         keys.epoch("user-events", 3), keys.outbox("user-events", 3),
...         keys.populations("user-events", 3), keys.conversions("user-events", 3)]
>>> len({key_slot(k.encode()) for k in part})
1
>>> key_slot(keys.model.encode()) == key_slot(keys.contributors.encode())
True
>>> keys.parse_user(keys.user("user-events", 3, "a}:{b")), keys.parse_user(keys.model)
(('user-events', 3, 'a}:{b'), None)
"""

from __future__ import annotations

from typing import Final

#: What follows a partition's tag in a user's key.
_USER: Final = ":u:"


class KeySpace:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def tag(self, topic: str, partition: int) -> str:
        """Everything of one input partition starts with this (its hash tag included)."""
        return f"{self.prefix}:{{{self.prefix}:{topic}:{partition}}}"

    def user(self, topic: str, partition: int, user_id: str) -> str:
        """Key of a user's state, in the partition the user's records are routed to."""
        return f"{self.tag(topic, partition)}{_USER}{user_id}"

    def users_pattern(self, topic: str, partition: int) -> str:
        """SCAN pattern of every user key of a partition."""
        return glob_escape(self.tag(topic, partition) + _USER) + "*"

    @property
    def all_users(self) -> str:
        """SCAN pattern of every user key of every partition (and perhaps more: check
        each key with :meth:`parse_user`)."""
        return glob_escape(f"{self.prefix}:{{{self.prefix}:") + "*}" + _USER + "*"

    def parse_user(self, key: str) -> tuple[str, int, str] | None:
        """(topic, partition, user id) of a user key; None for any other key."""
        head = f"{self.prefix}:{{{self.prefix}:"
        end = key.find("}", len(head))
        if not key.startswith(head) or end < 0 or not key.startswith(_USER, end + 1):
            return None
        topic, _, partition = key[len(head) : end].rpartition(":")
        if not (topic and partition.isdigit()):
            return None
        return topic, int(partition), key[end + 1 + len(_USER) :]

    def applied(self, topic: str, partition: int) -> str:
        """Key of a partition's last applied offset."""
        return f"{self.tag(topic, partition)}:applied"

    def outbox(self, topic: str, partition: int) -> str:
        """Key of a partition's outbox."""
        return f"{self.tag(topic, partition)}:outbox"

    def watermark(self, topic: str, partition: int) -> str:
        """Key of a partition's event-time watermark."""
        return f"{self.tag(topic, partition)}:wm"

    def epoch(self, topic: str, partition: int) -> str:
        """Key of a partition's owner epoch."""
        return f"{self.tag(topic, partition)}:epoch"

    def timers(self, topic: str, partition: int) -> str:
        """Key of a partition's timer set."""
        return f"{self.tag(topic, partition)}:timers"

    def populations(self, topic: str, partition: int) -> str:
        """Key of a partition's tier populations (hash: tier -> users)."""
        return f"{self.tag(topic, partition)}:pop"

    def conversions(self, topic: str, partition: int) -> str:
        """Key of a partition's resolved propensity labels by tier, group and outcome."""
        return f"{self.tag(topic, partition)}:conv"

    @property
    def model(self) -> str:
        """Key of the global model (and the tag of the models' slot)."""
        return f"{self.prefix}:{{{self.prefix}:model}}"

    def contribution(self, instance: str) -> str:
        """Key of one instance's contribution."""
        return f"{self.model}:contrib:{instance}"

    @property
    def contributors(self) -> str:
        """Key of the set of contributing instances."""
        return f"{self.model}:contributors"

    @property
    def partitions(self) -> str:
        """Key of the hash: topic -> partition count the state was written for."""
        return f"{self.model}:partitions"

    @property
    def counted(self) -> str:
        """Key of the set of topics whose tier populations count every user."""
        return f"{self.model}:counted"


def glob_escape(text: str) -> str:
    r"""``text`` matched literally by a Redis glob pattern.

    >>> glob_escape("ts:{ts:t:0}:u:"), glob_escape("a*b[1]?")
    ('ts:{ts:t:0}:u:', 'a\\*b\\[1\\]\\?')
    """
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
