"""`tierstream run` that kills itself with SIGKILL right after protocol step STEP of
batch N: ``python -m tests.integration.crashing_service STEP N``. Settings from env."""

from __future__ import annotations

import os
import signal
import sys

from consumer.service.loop import Service
from consumer.service.settings import Settings


def main() -> None:
    step, batch = sys.argv[1], int(sys.argv[2])
    batches = 0

    def on_step(name: str) -> None:
        nonlocal batches
        if name == "load":
            batches += 1
        if name == step and batches == batch:
            os.kill(os.getpid(), signal.SIGKILL)

    Service(Settings.from_env(), on_step=on_step).run(stop_when_idle=20)
    sys.exit("the crash point was never reached")


if __name__ == "__main__":
    main()
