"""Erasure requests, from the forget topic into the input topic.

An erasure pipeline (or ``tierstream forget``) sends forget requests
(``schemas/forget-request.v1.json``) to the forget topic. Erasing a user where the
request happens to be read would race with the user's events still waiting in the input
partition: an event produced before the request but read after it would bring the user
back. So the service forwards each request, unchanged, into the input topic keyed by the
user id: it lands in the user's own partition, after every event of theirs already
there, and the partition's owner applies it in that order (:mod:`consumer.service.batch`).
A replay of the input topic meets the erasure at the same place, too.

Forwarding is at least once (publish, then commit): a request forwarded twice erases an
already erased user, which changes nothing. A request that is not one (bad JSON, a key
that is not its user id) goes to the DLQ with its reason.

The service's consumer reads the forget topic beside the input topic, in the same group:
whichever instance is given a partition of it forwards its requests, then commits them.
"""

from __future__ import annotations

from collections.abc import Sequence

from consumer.service.dead_letters import dead_letter
from consumer.service.records import InputRecord, OutputRecord
from online_models.erasure import ForgetRequest
from schemas.decode import EventDecoder, Rejection, key_rejection


def forwarded(
    records: Sequence[InputRecord],
    decoder: EventDecoder,
    *,
    input_topic: str,
    dlq_topic: str,
    dlq_max_copy_bytes: int,
) -> list[OutputRecord]:
    """What to publish for ``records`` read from the forget topic: each valid request
    into the input topic, keyed by its user; anything else to the DLQ.

    >>> good = b'{"tierstream_control":"forget","user_id":"u1","request_id":"r",' \\
    ...        b'"requested_at":"2026-05-01T00:00:00Z"}'
    >>> recs = [InputRecord("forget", 0, 0, None, b"u1", good),
    ...         InputRecord("forget", 0, 1, None, b"u1", b'{"user_id": "u1"}')]
    >>> [(o.topic, o.key) for o in forwarded(recs, EventDecoder(), input_topic="in",
    ...                                      dlq_topic="dlq", dlq_max_copy_bytes=1024)]
    [('in', b'u1'), ('dlq', b'u1')]
    """
    out = []
    for rec in records:
        result = decoder.decode(rec.value)
        if isinstance(result, ForgetRequest):
            rejection = key_rejection(rec.key, result.user_id)
            if rejection is None:
                out.append(OutputRecord(input_topic, rec.key, rec.value or b""))
                continue
            result = rejection
        elif not isinstance(result, Rejection):
            result = Rejection("invalid", "an event, not a forget request (no tierstream_control)")
        out.append(dead_letter(rec, result, dlq_topic, max_copy_bytes=dlq_max_copy_bytes))
    return out
