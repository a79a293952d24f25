"""consumer.service.bounded_call: a client call that never returns costs its deadline,
not the process (kafka-python's lost answers, issue 9)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from consumer.service.bounded_call import BoundedCall
from consumer.service.errors import BrokerError, ClientWedged

REPO = Path(__file__).resolve().parents[2]


def test_a_call_returns_its_value_and_raises_its_own_errors() -> None:
    call = BoundedCall("client", limit_s=5)
    assert call(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        call(divmod, 1, 0)
    assert call.overruns == 0


def test_a_call_that_never_returns_raises_after_its_limit_and_the_next_gets_a_new_worker() -> None:
    call = BoundedCall("the consumer", limit_s=5)
    stuck = threading.Event()
    started = time.monotonic()
    with pytest.raises(ClientWedged, match=r"the consumer: wait did not return within 0\.2 s"):
        call(stuck.wait, limit_s=0.2)
    assert time.monotonic() - started < 3
    assert isinstance(ClientWedged("x"), BrokerError)  # the loop retries it
    wedged = [t for t in threading.enumerate() if t.name == "bounded the consumer"]
    assert len(wedged) == 1
    assert call(sum, [1, 2]) == 3  # served by a fresh worker while the old one waits
    assert call.overruns == 1
    stuck.set()  # the lost answer arrives after all: the abandoned worker ends
    wedged[0].join(5)
    assert not wedged[0].is_alive()
    call.close()


def test_a_wedged_worker_does_not_keep_the_process_alive() -> None:
    script = (
        "import threading\n"
        "from consumer.service.bounded_call import BoundedCall\n"
        "from consumer.service.errors import ClientWedged\n"
        "try:\n"
        "    BoundedCall('c', limit_s=0.1)(threading.Event().wait)\n"
        "except ClientWedged:\n"
        "    print('wedged')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and done.stdout.strip() == "wedged", done.stderr
