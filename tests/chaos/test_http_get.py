"""The chaos monitors' HTTP read (:func:`tests.chaos.harness.http_get`) takes an
instance killed mid-answer as "no answer": a ``/readyz`` whose process died between
the headers and the end of the body raised ``http.client.IncompleteRead`` (not an
``OSError``) in the monitor thread, and pytest failed the scenario for it
(``test_kill_small``, once in CI). No Kafka, no Redis: a socket that answers as a dying
instance does. Part of ``make test-unit``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.chaos.harness import http_get


@contextmanager
def answering(reply: bytes) -> Iterator[int]:
    """A port whose one connection gets ``reply`` and is then closed."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        thread.join(timeout=5)
        server.close()


def test_a_body_cut_short_is_no_answer() -> None:
    with answering(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n") as port:
        assert http_get(port, "/readyz", timeout=5) is None


def test_a_connection_closed_before_the_status_line_is_no_answer() -> None:
    with answering(b"") as port:
        assert http_get(port, "/readyz", timeout=5) is None


def test_a_whole_answer_is_read() -> None:
    with answering(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nready\n") as port:
        assert http_get(port, "/readyz", timeout=5) == (200, "ready\n")


def test_an_error_status_is_read() -> None:
    reply = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 10\r\n\r\nnot ready\n"
    with answering(reply) as port:
        assert http_get(port, "/readyz", timeout=5) == (503, "")
