"""A webhook receiver on 127.0.0.1 for tests: a threaded HTTP server whose POSTs are
answered by a function the test gives.

Only loopback: tests never reach an address outside 127.0.0.0/8.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (headers with lower-case names, body) -> the status to answer.
PostAnswer = Callable[[dict[str, str], bytes], int]


@contextmanager
def receiving_posts(answer: PostAnswer) -> Iterator[int]:
    """Serve POSTs with ``answer`` while the block runs; yields the port."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
