"""Watches a consumer group for the chaos harness: ``python -m tests.chaos.group_watch
BOOTSTRAP GROUP TOPIC`` prints one JSON line each time the group's state or assignment
changes: ``{"t": <monotonic s>, "state": "Stable", "members": [[0, 1], [2, 3]]}`` (each
member's partitions of TOPIC, sorted; other topics the members read are left out), or
``"state": "error: <kind>"`` while the broker cannot answer.

It runs in its own process because kafka-python's admin client can leave sockets open
after ``close()``, which the test process (warnings are errors) would report later. It
exits when its parent (the test runner) is gone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

POLL_S = 0.1


def describe(admin: Any, group: str, topic: str) -> tuple[str, list[list[int]]]:
    """The group's state and each member's assigned partitions of ``topic``."""
    info = admin.describe_groups([group])[group]
    members = []
    for m in info.get("members") or []:
        assignment = m.get("member_assignment") or {}
        parts: list[int] = []
        topics = assignment.get("assigned_partitions") if isinstance(assignment, dict) else None
        for entry in topics or []:
            if entry.get("topic") == topic:
                parts.extend(entry.get("partitions") or [])
        members.append(sorted(parts))
    return str(info.get("group_state")), sorted(members)


def main() -> None:
    from kafka import KafkaAdminClient

    bootstrap, group, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    parent = os.getppid()
    admin: Any = None
    last: tuple[str, list[list[int]]] | None = None
    while os.getppid() == parent:
        try:
            if admin is None:
                admin = KafkaAdminClient(
                    bootstrap_servers=bootstrap, request_timeout_ms=3000, bootstrap_timeout_ms=3000
                )
            now = describe(admin, group, topic)
        except Exception as exc:
            now = (f"error: {type(exc).__name__}", [])
            try:
                if admin is not None:
                    admin.close()
            except Exception:
                pass
            admin = None
        if now != last:
            line = {"t": time.monotonic(), "state": now[0], "members": now[1]}
            print(json.dumps(line), flush=True)
            last = now
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
