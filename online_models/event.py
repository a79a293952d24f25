"""A validated user event, as the core sees it.

Decoding (bytes -> :class:`Event`) lives in :mod:`schemas.decode`; the core only ever
receives events that passed the input schema.

>>> e = Event("e1", "u1", "purchase", 1_767_225_600_000, 25.0)
>>> e.type_index == EVENT_TYPES.index("purchase")
True
>>> Event("e2", "u1", "wishlist_add", 0, 0.0).event_type
'other'
>>> Event("e3", "u1", "product_view", 0, category="books").category
'books'
"""

from __future__ import annotations

from typing import Final

#: Event types the features count separately; anything else is counted as ``other``.
KNOWN_EVENT_TYPES: Final = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout",
    "purchase",
    "refund",
    "login",
    "signup",
)
EVENT_TYPES: Final = (*KNOWN_EVENT_TYPES, "other")
_TYPE_INDEX: Final = {name: i for i, name in enumerate(EVENT_TYPES)}
OTHER_INDEX: Final = _TYPE_INDEX["other"]
PURCHASE_INDEX: Final = _TYPE_INDEX["purchase"]
REFUND_INDEX: Final = _TYPE_INDEX["refund"]
ADD_TO_CART_INDEX: Final = _TYPE_INDEX["add_to_cart"]


class Event:
    """One user event with its event time in epoch milliseconds.

    ``event_type`` is normalised: unknown types become ``"other"``.
    ``amount`` is 0.0 when the event carries none. ``category`` is the event's
    ``properties.category`` (a product category) when it has a string one, else None.
    """

    __slots__ = (
        "amount",
        "category",
        "event_id",
        "event_type",
        "timestamp_ms",
        "type_index",
        "user_id",
    )

    def __init__(
        self,
        event_id: str,
        user_id: str,
        event_type: str,
        timestamp_ms: int,
        amount: float = 0.0,
        *,
        category: str | None = None,
    ) -> None:
        index = _TYPE_INDEX.get(event_type, OTHER_INDEX)
        self.event_id = event_id
        self.user_id = user_id
        self.event_type = EVENT_TYPES[index]
        self.type_index = index
        self.timestamp_ms = timestamp_ms
        self.amount = amount
        self.category = category

    def __repr__(self) -> str:
        return (
            f"Event({self.event_id!r}, {self.user_id!r}, {self.event_type!r}, "
            f"{self.timestamp_ms}, {self.amount!r})"
        )
