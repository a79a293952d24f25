"""Every Redis key the service writes, and how long it lives.

=============================== ======================================== ===============
key                             value                                    lifetime
=============================== ======================================== ===============
``{p}:{u:<user_id>}``           user state, JSON (features, tier, seq)   state TTL, reset
                                                                         on every write
``{p}:applied:<topic>:<part>``  last input offset applied to state       forever
``{p}:outbox:<topic>:<part>``   list of outputs saved, not yet published until published
``{p}:wm:<topic>:<part>``       event-time watermark of the partition    forever
``{p}:timers:<topic>:<part>``   sorted set: user -> when their timer     while armed
                                fires (label deadline, re-score)
``{p}:epoch:<topic>:<part>``    owner epoch of the partition: INCR by    forever
                                each new owner; every save and outbox
                                trim checks it (a zombie is fenced)
``{p}:model``                   the global model version, JSON           forever
``{p}:contrib:<instance>``      an instance's learning since the model,  forever
                                JSON
``{p}:contributors``            set of instance ids that contributed     forever
=============================== ======================================== ===============

``{p}`` is the key prefix setting. The ``{u:...}`` hash tag keeps everything of one user
in one Redis Cluster slot.

>>> KeySpace("ts").user("u42"), KeySpace("ts").applied("user-events", 3)
('ts:{u:u42}', 'ts:applied:user-events:3')
"""

from __future__ import annotations


class KeySpace:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def user(self, user_id: str) -> str:
        """Key of a user's state."""
        return f"{self.prefix}:{{u:{user_id}}}"

    def applied(self, topic: str, partition: int) -> str:
        """Key of a partition's last applied offset."""
        return f"{self.prefix}:applied:{topic}:{partition}"

    def outbox(self, topic: str, partition: int) -> str:
        """Key of a partition's outbox."""
        return f"{self.prefix}:outbox:{topic}:{partition}"

    def watermark(self, topic: str, partition: int) -> str:
        """Key of a partition's event-time watermark."""
        return f"{self.prefix}:wm:{topic}:{partition}"

    @property
    def all_watermarks(self) -> str:
        """SCAN pattern of every partition's watermark key."""
        return f"{self.prefix}:wm:*"

    def epoch(self, topic: str, partition: int) -> str:
        """Key of a partition's owner epoch."""
        return f"{self.prefix}:epoch:{topic}:{partition}"

    def timers(self, topic: str, partition: int) -> str:
        """Key of a partition's timer set."""
        return f"{self.prefix}:timers:{topic}:{partition}"

    @property
    def model(self) -> str:
        """Key of the global model."""
        return f"{self.prefix}:model"

    def contribution(self, instance: str) -> str:
        """Key of one instance's contribution."""
        return f"{self.prefix}:contrib:{instance}"

    @property
    def contributors(self) -> str:
        """Key of the set of contributing instances."""
        return f"{self.prefix}:contributors"
