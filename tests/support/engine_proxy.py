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

ENGINE_SOCKET = "/var/run/docker.sock"


@dataclasses.dataclass
class Proxy:
    path: str
    reached: threading.Event

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"


@contextlib.contextmanager
def holding(request: bytes, seconds: float) -> Iterator[Proxy]:
    """Forward everything to the engine; the first request whose request line holds
    ``request`` (``b"/containers/create"``) waits ``seconds`` before it goes on, and
    ``reached`` is set when it arrives."""
    folder = tempfile.mkdtemp(prefix="engine-proxy-")
    path = os.path.join(folder, "docker.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.settimeout(0.1)
    proxy = Proxy(path, threading.Event())
    stopping = threading.Event()

    def pipe(source: socket.socket, target: socket.socket, hold: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                line = data.split(b"\r\n", 1)[0]
                if hold and request in line and not proxy.reached.is_set():
                    proxy.reached.set()
                    time.sleep(seconds)
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
            engine.connect(ENGINE_SOCKET)
            for source, target, hold in ((client, engine, True), (engine, client, False)):
                threading.Thread(target=pipe, args=(source, target, hold), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield proxy
    finally:
        stopping.set()
        acceptor.join(timeout=5)
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
            os.rmdir(folder)
