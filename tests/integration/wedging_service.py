"""`tierstream run` whose Kafka consumer loses the answer of one poll, as kafka-python
3.0.12 can after a broker died: poll number N (counted over every consumer the process
makes) waits forever on an event nobody sets, exactly where the client's own caller
waits (``NetworkSelector.run``). The consumer, the brokers and everything else are real.
``python -m tests.integration.wedging_service N``; settings from env."""

from __future__ import annotations

import sys
import threading
from typing import Any

from kafka import KafkaConsumer

from consumer.service.loop import Service
from consumer.service.settings import Settings


def main() -> None:
    wedge_at = int(sys.argv[1])
    polls = 0
    real_poll = KafkaConsumer.poll

    def poll(self: KafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        nonlocal polls
        polls += 1
        if polls == wedge_at:
            print(f"poll {polls} wedged", file=sys.stderr, flush=True)
            threading.Event().wait()  # the answer that never comes
        return real_poll(self, *args, **kwargs)

    KafkaConsumer.poll = poll  # type: ignore[method-assign]
    summary = Service(Settings.from_env()).run(stop_when_idle=5)
    print(f"records {summary.records} retries {summary.retries}", file=sys.stderr)


if __name__ == "__main__":
    main()
