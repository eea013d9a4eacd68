"""A fake HTTP endpoint on a free loopback port, for the tests that scrape an engine's /metrics.

One helper, so that each test says only what its endpoint answers; the server stops (and its thread
ends) when the block does, whatever the test did.
"""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
from collections.abc import Callable, Iterator

#: what a GET answers: (status, content type, body), from the request path
Answer = Callable[[str], tuple[int, str, bytes]]

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@contextlib.contextmanager
def serving(answer: Answer, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``answer`` for every GET; yields the base URL ``http://127.0.0.1:PORT`` (``https://`` with
    ``tls``, a server-side context)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, data = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
