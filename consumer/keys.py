"""Every Redis key the service writes, and how long it lives.

=============================== ======================================== ===============
key                             value                                    lifetime
=============================== ======================================== ===============
``{p}:{u:<user_id>}``           user state, JSON (features, tier, seq)   state TTL, reset
                                                                         on every write
``{p}:applied:<topic>:<part>``  last input offset applied to state       forever
``{p}:outbox:<topic>:<part>``   list of outputs saved, not yet published until published
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
