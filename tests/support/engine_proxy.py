"""A unix socket in front of the Docker engine's that holds one chosen request for a
while, so a test can send a signal exactly while the CLI waits on that step."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator

THREAD_JOIN_SECONDS = 5


@dataclasses.dataclass
class Proxy:
    path: str
    reached: threading.Event

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"


def engine_socket(docker_host: str | None = None) -> str:
    """The socket of the engine ``docker_host`` names (default: $DOCKER_HOST)."""
    host = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        raise ValueError(f"the engine proxy forwards to a unix socket, not {host}")
    return host.removeprefix("unix://")


@contextlib.contextmanager
def holding(request: bytes, seconds: float, docker_host: str | None = None) -> Iterator[Proxy]:
    """Forward everything to the engine; the first request whose request line holds
    ``request`` (``b"/containers/create"``) waits ``seconds`` before it goes on, and
    ``reached`` is set when it arrives. Every connection and thread of the proxy is
    gone when the block is left."""
    target_path = engine_socket(docker_host)
    folder = tempfile.mkdtemp(prefix="engine-proxy-")
    path = os.path.join(folder, "docker.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.settimeout(0.1)
    proxy = Proxy(path, threading.Event())
    stopping = threading.Event()
    connections: list[socket.socket] = []
    pipes: list[threading.Thread] = []

    def pipe(source: socket.socket, target: socket.socket, hold: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                line = data.split(b"\r\n", 1)[0]
                if hold and request in line and not proxy.reached.is_set():
                    proxy.reached.set()
                    stopping.wait(seconds)
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(target_path)
            connections.extend((client, engine))
            for source, target, hold in ((client, engine, True), (engine, client, False)):
                thread = threading.Thread(target=pipe, args=(source, target, hold), daemon=True)
                pipes.append(thread)
                thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield proxy
    finally:
        stopping.set()
        acceptor.join(timeout=THREAD_JOIN_SECONDS)
        listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        deadline = time.monotonic() + THREAD_JOIN_SECONDS
        for thread in pipes:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in pipes), "a proxy thread outlived its test"
        with contextlib.suppress(OSError):
            os.unlink(path)
            os.rmdir(folder)
