"""The Kafka client's read of a connection it had just closed is not an error line: at
the end of a few runs, kafka-python 3.0's network thread logged ``Error receiving network
data closing socket`` at ERROR with a traceback (``'NoneType' object has no attribute
'recv'``), which a log-based alert would page on. Through the service's log
configuration it is a debug line now; the client's other errors pass as they are."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from consumer.service import logs

    logs.configure(sys.argv[1], "text")
    log = logging.getLogger("kafka.net.transport")
    for transport in ("<KafkaTCPTransport [none] (closed)>",
                      "<KafkaTCPTransport [node 1] (connected)>"):
        try:
            None.recv(4096)
        except AttributeError:
            log.exception("%s: Error receiving network data closing socket", transport)
    logs.flush()
    """
)


def _stderr(level: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, level], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_read_of_a_closed_connection_is_no_error_line() -> None:
    text = _stderr("info")
    assert "(closed)" not in text, text
    # the same error on a connection the client holds open is still one, traceback too
    assert "ERROR kafka.net.transport: <KafkaTCPTransport [node 1] (connected)>" in text
    assert text.count("Traceback") == 1, text


def test_at_debug_level_it_is_a_debug_line_without_its_traceback() -> None:
    text = _stderr("debug")
    lines = [line for line in text.splitlines() if "(closed)" in line]
    assert len(lines) == 1, text
    assert " DEBUG kafka.net.transport: " in lines[0]
    assert lines[0].endswith("a read raced the close ('NoneType' object has no attribute 'recv')")
    assert text.count("Traceback") == 1, text
