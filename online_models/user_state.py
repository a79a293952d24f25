"""Everything the service keeps about one user between batches.

>>> s = UserState.new()
>>> s.remember("e1"); s.seen("e1"), s.seen("e2")
(True, False)
>>> UserState.from_json(s.to_json()).to_json() == s.to_json()
True

The event ids of the dedup window are kept as 8-byte digests (:func:`event_key`), not as
the ids themselves: a state saved with the ids (``recent_ids``) is read into digests.

>>> old = s.to_json(); del old["recent_digests"]; old["recent_ids"] = ["e1"]
>>> UserState.from_json(old).seen("e1")
True
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from typing import Any, Final

from online_models.feature_vector import FEATURE_NAMES, vector
from online_models.features import UserFeatures

STATE_VERSION: Final = 1
#: How many recent event ids a user remembers to drop redeliveries, at most (as digests,
#: at most 512 bytes a user).
DEDUP_WINDOW: Final = 64
#: An event more than this after the user's newest (event time) starts a new dedup
#: window: at-least-once producers resend within seconds (Kafka's producer gives up after
#: two minutes), so the ids of a burst that ended this long before cannot come again. A
#: user active now and then keeps the ids of their last burst, not of their last 64 events.
DEDUP_GAP_MS: Final = 10 * 60_000
#: Bytes of an event id's digest in the dedup window.
EVENT_KEY_BYTES: Final = 8
_KEY: Final = b"tierstream dedup window"
_KEYED: Final = hashlib.blake2b(digest_size=EVENT_KEY_BYTES, key=_KEY)


def event_key(event_id: str) -> bytes:
    """The 8-byte digest the dedup window keeps of ``event_id`` (BLAKE2b, keyed by the
    project's name so that the digests are of this use only).

    An id of ~36 characters costs 8 bytes instead of ~40. A new event is wrongly taken
    for a redelivery only if its digest equals one of the (at most) :data:`DEDUP_WINDOW`
    digests of the user's recent events: for ids that are not chosen to collide, a
    probability of at most 64 x 2^-64, about 3.5e-18 per event. At a million events a
    second that is one wrongly dropped event in some nine thousand years; producers'
    own redeliveries, which the window is for, are far likelier by many orders.

    >>> len(event_key("7511a508-270b-4c5c-aff8-2dbfff549d24")), event_key("a") == event_key("a")
    (8, True)

    Stored states keep these digests, so they never change from one version to the next:

    >>> event_key("7511a508-270b-4c5c-aff8-2dbfff549d24").hex()
    '1b25571fd445452e'
    """
    h = _KEYED.copy()  # the key's block taken once: a third cheaper than a new hash
    h.update(event_id.encode("utf-8", "surrogatepass"))
    return h.digest()


class Recomputable(list[float]):
    """A pending snapshot's vector taken from the user's features as they still are (no
    event applied since): ``vector(features, t)`` of the snapshot's time ``t``, so the
    stored state leaves it out and the reader makes it again when it is needed (its
    label, or an event that changes the features; :meth:`UserState.fix_snapshots`). A
    snapshot read back without its vector holds None in its place.

    >>> from online_models.event import Event
    >>> s = UserState.new()
    >>> s.features.apply(Event("e1", "u", "purchase", 0, 20.0))
    >>> day = 86_400_000
    >>> s.pending = [[day, day, Recomputable(vector(s.features, day)), None, 0, 0, None, 0.0]]
    >>> s.pending[0][2] = None          # as a stored state reads back
    >>> s.snapshot_vector(s.pending[0]) == vector(s.features, day)
    True
    >>> s.fix_snapshots()               # an event comes: the vector is the snapshot's own
    >>> type(s.pending[0][2]) is list, s.pending[0][2] == vector(s.features, day)
    (True, True)
    """

    __slots__ = ()


class UserState:
    """Features, current tier and tier-change sequence of one user."""

    __slots__ = (
        "born_ms",
        "due_ms",
        "features",
        "learned_ms",
        "pending",
        "recent_ids",
        "rescored_ms",
        "seq",
        "tier",
        "tier_since_ms",
    )

    def __init__(
        self,
        features: UserFeatures,
        tier: str | None,
        seq: int,
        tier_since_ms: int,
        recent_ids: deque[bytes],
        *,
        pending: list[Any] | None = None,
        learned_ms: int = -1,
        rescored_ms: int = -1,
        due_ms: int = -1,
        born_ms: int = -1,
    ) -> None:
        self.features = features
        self.tier = tier
        self.seq = seq
        self.tier_since_ms = tier_since_ms
        #: Digests (:func:`event_key`) of the user's most recent event ids, oldest first.
        self.recent_ids = recent_ids
        #: Snapshots awaiting their labels, one per horizon of the heads:
        #: ``[horizon ms, event time, raw vector, predicted p, purchases since, events
        #: since, tier then, spend since]`` (:class:`~online_models.engine.TierEngine`).
        #: The vector is a :class:`Recomputable` while no event has been applied since
        #: the snapshot, or None when such a vector was left out of the stored state.
        self.pending = pending
        #: Event time of the last learning sample taken from this user.
        self.learned_ms = learned_ms
        #: Event time of the last re-score without an event (inactivity).
        self.rescored_ms = rescored_ms
        #: When this user's timer fires next (label deadline or re-score), -1: never.
        self.due_ms = due_ms
        #: Event time of the first event of this lifetime of the user (-1: none yet). A
        #: user whose state expired, or who was forgotten, starts a new lifetime.
        self.born_ms = born_ms

    @classmethod
    def new(cls) -> UserState:
        """A user never seen before."""
        return cls(UserFeatures.new(), None, 0, -1, deque(maxlen=DEDUP_WINDOW))

    def seen(self, event_id: str) -> bool:
        """True when ``event_id`` is among the user's recent events (a redelivery)."""
        return event_key(event_id) in self.recent_ids

    def remember(self, event_id: str) -> None:
        """Record ``event_id`` as applied."""
        self.recent_ids.append(event_key(event_id))

    def first_sight(self, event_id: str, at_ms: int | None = None) -> bool:
        """Record ``event_id`` as applied unless the user already had it (a redelivery):
        whether it is new. :meth:`seen` then :meth:`remember`, with one digest. An event
        at ``at_ms`` more than :data:`DEDUP_GAP_MS` after the user's newest starts a new
        window (a redelivery has its original's time, never after the newest, so it never
        does).

        >>> s = UserState.new()
        >>> s.first_sight("e1"), s.first_sight("e1"), s.seen("e1")
        (True, False, True)
        >>> s.features.last_ms = 0  # the user's newest event (the engine folds it in)
        >>> s.first_sight("e2", DEDUP_GAP_MS), s.first_sight("e1", 0), len(s.recent_ids)
        (True, False, 2)
        >>> s.first_sight("e3", DEDUP_GAP_MS + 1), s.seen("e1"), len(s.recent_ids)
        (True, False, 1)
        """
        key = event_key(event_id)
        recent = self.recent_ids
        if at_ms is not None and at_ms - self.features.last_ms > DEDUP_GAP_MS:
            recent.clear()
        elif key in recent:
            return False
        recent.append(key)
        return True

    def snapshot_vector(self, snap: list[Any]) -> list[float]:
        """The vector of the pending snapshot ``snap``: its own, or the features' at its
        time when the stored state left it out (:class:`Recomputable`)."""
        x: list[float] | None = snap[2]
        return vector(self.features, snap[1]) if x is None else x

    def fix_snapshots(self) -> None:
        """Make every pending snapshot's vector its own, before an event changes the
        features: a vector left out of the stored state is made now (once per moment,
        shared by the snapshots of that moment), a :class:`Recomputable` one becomes a
        plain list (the stored state then keeps it)."""
        made: dict[int, list[float]] = {}
        for p in self.pending or ():
            x = p[2]
            if x is None:
                t = p[1]
                x = made.get(t)
                if x is None:
                    x = made[t] = vector(self.features, t)
                p[2] = x
            elif type(x) is Recomputable:
                p[2] = list(x)

    def stored_pending(self) -> list[Any] | None:
        """The pending snapshots with every vector a plain list (a left-out one made
        again), as JSON and the tagged form write them; the snapshots themselves when
        they all are."""
        pending = self.pending
        if not isinstance(pending, list) or not any(map(_made_again, pending)):
            return pending
        return [
            [p[0], p[1], list(self.snapshot_vector(p)), *p[3:]] if _made_again(p) else p
            for p in pending
        ]

    def fields(self) -> dict[str, Any]:
        """Every field, versioned, as :meth:`to_json` has them but for the dedup window,
        whose digests stay bytes (what the binary encoding writes)."""
        return {
            "v": STATE_VERSION,
            "features": self.features.to_json(),
            "tier": self.tier,
            "seq": self.seq,
            "tier_since_ms": self.tier_since_ms,
            "recent_digests": list(self.recent_ids),
            "pending": self.stored_pending(),
            "learned_ms": self.learned_ms,
            "rescored_ms": self.rescored_ms,
            "due_ms": self.due_ms,
            "born_ms": self.born_ms,
        }

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able form, versioned (the dedup window's digests in hex)."""
        data = self.fields()
        data["recent_digests"] = [k.hex() for k in self.recent_ids]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserState:
        """Inverse of :meth:`to_json`. Raises ValueError on an unknown state version or on
        a state that cannot be applied (a missing, non-numeric or non-finite feature).

        >>> bad = UserState.new().to_json()
        >>> bad["features"]["spend"][0] = None     # what an infinite sum becomes in JSON
        >>> UserState.from_json(bad)
        Traceback (most recent call last):
        ...
        ValueError: features.spend[0] is None, not a finite number
        """
        version = data.get("v") if isinstance(data, dict) else data
        if version != STATE_VERSION:
            raise ValueError(f"unsupported user state version {version!r}")
        _check_numbers(data["features"], "features")
        features = UserFeatures.from_json(data["features"])
        why = features.impossible()
        if why is not None:
            raise ValueError(f"features: {why}")
        return cls(
            features,
            data["tier"],
            data["seq"],
            data["tier_since_ms"],
            _recent(data),
            # A state saved before the heads had horizons held one snapshot of an older
            # feature vector, which no model can learn from now: dropped; so is a
            # snapshot of a vector of another length (saved before features were added).
            pending=_finite_snapshots(current_snapshots(data.get("pending"))),
            learned_ms=data.get("learned_ms", -1),
            rescored_ms=data.get("rescored_ms", -1),
            due_ms=data.get("due_ms", -1),
            born_ms=data.get("born_ms", -1),
        )


def _recent(data: dict[str, Any]) -> deque[bytes]:
    """The dedup window of a saved state: digests as bytes (what the binary encoding
    reads) or hex (JSON), or the event ids themselves (a state saved before digests)."""
    if "recent_digests" not in data:
        ids = data["recent_ids"]
        if not all(type(i) is str for i in ids):
            raise ValueError("recent_ids holds an event id that is not a string")
        return deque(map(event_key, ids), maxlen=DEDUP_WINDOW)
    keys = data["recent_digests"]
    if not set(map(type, keys)) <= _BYTES:
        keys = [k if type(k) is bytes else bytes.fromhex(k) for k in keys]
    if set(map(len, keys)) - {EVENT_KEY_BYTES}:
        raise ValueError(f"recent_digests holds a digest not of {EVENT_KEY_BYTES} bytes")
    return deque(keys, maxlen=DEDUP_WINDOW)


def _made_again(snap: Any) -> bool:
    """Whether the snapshot's vector is one the stored state leaves out."""
    return (
        type(snap) is list and len(snap) > 2 and (snap[2] is None or type(snap[2]) is Recomputable)
    )


def current_snapshots(pending: Any) -> list[Any] | None:
    """The snapshots of ``pending`` whose vector is of today's length; None when there is
    none (or ``pending`` is an older state's single snapshot).

    >>> old, now = [1, 0, [0.0] * 3], [1, 0, [0.0] * len(FEATURE_NAMES)]
    >>> current_snapshots([old, now]) == [now], current_snapshots([old])
    (True, None)
    """
    if not isinstance(pending, list):
        return None
    d = len(FEATURE_NAMES)
    kept = [
        p
        for p in pending
        if isinstance(p, list) and len(p) > 2 and isinstance(p[2], list) and len(p[2]) == d
    ]
    return kept or None


def _finite_snapshots(pending: list[Any] | None) -> list[Any] | None:
    """``pending``, once every number its snapshots learn from is known finite: the
    vector, the propensity (or None, not scored yet) and the spend since. A NaN there
    would reach a head's labels and every version after it.

    >>> snap = [7, 0, [0.0] * len(FEATURE_NAMES), 0.2, 0, 0, None, float("nan")]
    >>> _finite_snapshots([snap])
    Traceback (most recent call last):
    ...
    ValueError: pending[0][7] is nan, not a finite number
    """
    for i, snap in enumerate(pending or ()):
        for j in (2, 3, 7):
            value = snap[j] if j < len(snap) else 0.0
            if not (value is None or type(value) is Recomputable or _all_finite(value)):
                _find_bad(value, f"pending[{i}][{j}]")
    return pending


def _check_numbers(value: Any, where: str) -> None:
    """Every leaf of a feature block is a finite number (or ``last_purchase_ms`` null).
    The path of a bad leaf is spelled out only once one is found: states are read by
    the thousand per batch."""
    if not _all_finite(value):
        _find_bad(value, where)


def _all_finite(value: Any) -> bool:
    """True when every leaf is a finite int or float: a list of numbers is checked by
    its types and its sum (an infinite or NaN element makes the sum so; a sum that
    overflows sends the state to the slow path, which then finds nothing)."""
    if type(value) is dict:
        return all(
            (item is None and key in _NULLABLE) or _all_finite(item) for key, item in value.items()
        )
    if type(value) is list:
        if value and type(value[0]) is list:
            return all(_all_finite(item) for item in value)
        return set(map(type, value)) <= _NUMBER_TYPES and math.isfinite(sum(value))
    return type(value) in _NUMBER_TYPES and math.isfinite(value)


def _find_bad(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not (key in _NULLABLE and item is None):
                _find_bad(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _find_bad(item, f"{where}[{i}]")
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} is {value!r}, not a finite number")


_BYTES: Final = frozenset((bytes,))
_NULLABLE: Final = ("last_purchase_ms", "first_purchase_ms")
_NUMBER_TYPES: Final = frozenset((int, float))
