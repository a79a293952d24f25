"""``tierstream run`` with a remote control, for fault injection.

``python -m tests.chaos.instance [run options]`` is exactly ``tierstream run [run options]``
(the same command-line path, settings and summary line), with one addition: the service's
own step hook (``Service(on_step=...)``, see :mod:`consumer.service.checkpoint`) looks in
the folder named by ``TIERSTREAM_CHAOS_CONTROL`` after each step of the commit protocol.
A file ``at-<step>`` there (``load``, ``apply``, ``save``, ``publish``, ``commit``,
``clear``) holding ``kill`` or ``stop`` makes the process SIGKILL or SIGSTOP itself right
after that step of its next batch: a crash, or a zombie frozen, at an exact point of the
protocol. The file is consumed; a line ``chaos: <action> after <step> of batch <n>`` on
stderr says when it fired.

Without a request the hook does nothing but count batches. SIGUSR1 writes every thread's
stack to stderr (``faulthandler``): what a test that saw an instance stop making progress
puts in its report. The process also SIGKILLs
itself when the test runner that started it is gone, so no instance outlives a crashed
test session.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

CONTROL_ENV = "TIERSTREAM_CHAOS_CONTROL"
STEPS = ("load", "apply", "save", "publish", "commit", "clear")


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    from consumer import cli
    from consumer.service import loop

    control = Path(os.environ[CONTROL_ENV]) if os.environ.get(CONTROL_ENV) else None
    batches = 0

    def on_step(step: str) -> None:
        nonlocal batches
        if step == "load":
            batches += 1
        if control is None:
            return
        request = control / f"at-{step}"
        try:
            action = request.read_text().strip()
            request.unlink()
        except FileNotFoundError:
            return
        print(f"chaos: {action} after {step} of batch {batches}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)

    base = loop.Service

    class Hooked(base):  # type: ignore[misc,valid-type]
        def __init__(self, settings: Any, **kwargs: Any) -> None:
            kwargs.setdefault("on_step", on_step)
            super().__init__(settings, **kwargs)

    loop.Service = Hooked  # type: ignore[misc]
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    return cli.main(["run", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
