"""HTTP servers on 127.0.0.1 (a free port) for clients under test: ``running`` serves
any handler; ``serve`` answers each route with a fixed JSON document and records
every request. Stopped on exit."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import socket
import threading
from collections.abc import Iterator, Mapping


@dataclasses.dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


@dataclasses.dataclass
class Server:
    url: str
    requests: list[Recorded]

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]


@contextlib.contextmanager
def serve(routes: Mapping[str, object]) -> Iterator[Server]:
    """``routes``: path (with query) -> JSON document; anything else answers 404."""
    recorded: list[Recorded] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            recorded.append(Recorded("GET", self.path, dict(self.headers)))
            if self.path in routes:
                body, status = json.dumps(routes[self.path]).encode(), 200
            else:
                body, status = b'{"message": "Not Found"}', 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with running(Handler) as url:
        yield Server(url, recorded)


@contextlib.contextmanager
def running(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served by threads on a free port of 127.0.0.1; yields the base URL
    (no trailing slash). Stopped on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True  # a client's kept-alive connection never holds the exit
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
