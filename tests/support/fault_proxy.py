"""An HTTP/1.1 proxy on 127.0.0.1 (a free port), in threads, in front of an upstream
HOST:PORT (or several, chosen by path prefix), that does what a flaky network or an
overloaded service does, as a test scripts it: reset the connection, answer 500 or
429 with Retry-After, accept a request and never answer, cut a response halfway, or
send it slowly.

Requests are framed (Content-Length or chunked bodies), so connections stay alive
between requests as clients expect, and each request is judged on its own: the first
rule matching its method and path (with query) that has turns left applies, else it
is passed on. Every request is recorded with what was done to it. The proxy is
transparent otherwise: the Host header still names the proxy, so a service that
builds URLs from it (a registry's upload locations) sends its clients back through.

Anything speaking HTTP/1.1 over TCP can sit behind it: moto, a registry, the GitHub
cache service and the blob storage it signs URLs for (point their URLs at
``proxy.url``; ``routes`` sends the service's paths to it, the rest to storage)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Mapping

PASS, RESET, STATUS, HANG, CUT, SLOW = "pass", "reset", "status", "hang", "cut", "slow"
# Before: the request never reaches upstream. After: upstream did it, the answer is lost.
BEFORE, AFTER = "before", "after"
IO_TIMEOUT_SECONDS = 60.0  # a stuck test fails rather than hangs
_HEAD_LIMIT = 64 * 1024


@dataclasses.dataclass
class Fault:
    """What to do to requests matching ``method`` (None: any) and ``path`` (a regex
    searched in the path with its query; None: any)."""

    action: str
    method: str | None = None
    path: str | None = None
    times: int | None = None  # matching requests it applies to; None: every one
    skip: int = 0  # matching requests let through first ("the Nth request": skip N-1)
    status: int = 500
    retry_after: str | None = None  # the Retry-After header of a STATUS answer
    when: str = BEFORE  # RESET only: before upstream sees the request, or after
    delay: float = 0.0  # SLOW: seconds between pieces of the answer
    piece: int = 1024  # SLOW: bytes a piece

    def matches(self, method: str, target: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or re.search(self.path, target) is not None
        )


@dataclasses.dataclass(frozen=True)
class Seen:
    method: str
    target: str  # path with query
    action: str
    at: float  # time.monotonic()


class FaultProxy:
    """Use as a context manager. ``upstream``: HOST:PORT; ``routes``: path prefix ->
    HOST:PORT, for requests that go elsewhere."""

    def __init__(self, upstream: str, *, routes: Mapping[str, str] | None = None) -> None:
        self.upstream = _address(upstream)
        self.routes = {prefix: _address(where) for prefix, where in (routes or {}).items()}
        self.seen: list[Seen] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.url = f"http://{self.address}"

    # Scripting

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """No more faults, and a fresh record."""
        with self._lock:
            self._faults.clear()
            self.seen.clear()

    def count(self, method: str | None = None, path: str | None = None,
              action: str | None = None) -> int:  # fmt: skip
        """Requests seen matching ``method``, ``path`` (a regex) and ``action``."""
        probe = Fault(PASS, method, path)
        with self._lock:
            return sum(probe.matches(s.method, s.target) and action in (None, s.action)
                       for s in self.seen)  # fmt: skip

    def _judge(self, method: str, target: str) -> Fault | None:
        with self._lock:
            chosen = None
            for fault in self._faults:
                if fault.times == 0 or not fault.matches(method, target):
                    continue
                if fault.skip:
                    fault.skip -= 1
                    continue
                if fault.times is not None:
                    fault.times -= 1
                chosen = fault
                break
            action = chosen.action if chosen else PASS
            self.seen.append(Seen(method, target, action, time.monotonic()))
            return chosen

    # Life

    def __enter__(self) -> FaultProxy:
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)

    def _spawn(self, target, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(IO_TIMEOUT_SECONDS)
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        sock.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._spawn(self._serve, self._track(client))

    # One client connection, request by request

    def _upstream_for(self, target: str) -> tuple[str, int]:
        for prefix, address in self.routes.items():
            if target.startswith(prefix):
                return address
        return self.upstream

    def _serve(self, client: socket.socket) -> None:
        reader = _Reader(client)
        # One connection to each upstream this client's requests went to, kept alive.
        upstreams: dict[tuple[str, int], tuple[socket.socket, _Reader]] = {}
        try:
            while not self._stopping.is_set():
                head = reader.head()
                if head is None:
                    return
                method, target, headers = _parse_request(head)
                fault = self._judge(method, target)
                if headers.get("expect", "").lower() == "100-continue":
                    if fault and fault.action in (STATUS, RESET) and fault.when == BEFORE:
                        # Answered before the body, as a server may: the connection ends.
                        self._fault_before_body(client, method, fault)
                        return
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    head = _without_header(head, "expect")
                body = reader.body(headers)
                if fault and fault.action == RESET and fault.when == BEFORE:
                    _reset(client)
                    return
                if fault and fault.action == STATUS:
                    client.sendall(_answer(method, fault.status, fault.retry_after))
                    continue
                if fault and fault.action == HANG:
                    self._hang(client)
                    return
                address = self._upstream_for(target)
                if address not in upstreams:
                    connection = self._track(socket.create_connection(address))
                    upstreams[address] = (connection, _Reader(connection))
                upstream, upstream_reader = upstreams[address]
                upstream.sendall(head + body)
                answer_head = upstream_reader.head()
                if answer_head is None:
                    _reset(client)
                    return
                status, answer_headers = _parse_response(answer_head)
                answer_body = upstream_reader.body(answer_headers, method=method, status=status,
                                                   response=True)  # fmt: skip
                if fault and fault.action == RESET:  # AFTER: upstream did it
                    _reset(client)
                    return
                if fault and fault.action == CUT:
                    client.sendall(answer_head + answer_body[: len(answer_body) // 2])
                    _reset(client)
                    return
                if fault and fault.action == SLOW:
                    whole = answer_head + answer_body
                    for start in range(0, len(whole), fault.piece):
                        client.sendall(whole[start : start + fault.piece])
                        if self._stopping.wait(fault.delay):
                            return
                else:
                    client.sendall(answer_head + answer_body)
                if answer_headers.get("connection", "").lower() == "close" or (
                    _has_body(method, status) and not _framed(answer_headers)
                ):
                    return  # the body ended with the connection, or upstream ends it
        except (OSError, ValueError):
            return
        finally:
            self._forget(client)
            for connection, _ in upstreams.values():
                self._forget(connection)

    def _fault_before_body(self, client: socket.socket, method: str, fault: Fault) -> None:
        if fault.action == RESET:
            _reset(client)
        else:
            client.sendall(_answer(method, fault.status, fault.retry_after, close=True))

    def _hang(self, client: socket.socket) -> None:
        """Never answer: hold the connection until the client gives up or we stop."""
        while not self._stopping.is_set():
            readable, _, _ = select.select([client], [], [], 0.1)
            if readable:
                try:
                    if not client.recv(65536):
                        return
                except OSError:
                    return


class _Reader:
    """Bytes of one socket, read as HTTP messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def head(self) -> bytes | None:
        """A message's start line and headers, None if the peer closed between messages."""
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > _HEAD_LIMIT:
                raise ValueError("headers too long")
            if not self._more():
                if self.buffer:
                    raise ValueError("closed mid-message")
                return None
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            if not self._more():
                raise ValueError("closed mid-body")
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._more():
                raise ValueError("closed mid-chunk")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def body(self, headers: dict[str, str], *, method: str = "", status: int = 0,
             response: bool = False) -> bytes:  # fmt: skip
        """The message's body as sent (chunk framing kept)."""
        if response and not _has_body(method, status):
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                size_line = self.line()
                parts.append(size_line)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while (trailer := self.line()) != b"\r\n":
                        parts.append(trailer)
                    parts.append(b"\r\n")
                    return b"".join(parts)
                parts.append(self.exactly(size + 2))
        if "content-length" in headers:
            return self.exactly(int(headers["content-length"]))
        if not response:
            return b""
        while self._more():  # framed by the connection's end
            pass
        data, self.buffer = self.buffer, b""
        return data


def _address(host_port: str) -> tuple[str, int]:
    host, _, port = host_port.rpartition(":")
    return host, int(port)


def _parse_request(head: bytes) -> tuple[str, str, dict[str, str]]:
    start, headers = _split_head(head)
    method, target, _ = start.split(" ", 2)
    return method, target, headers


def _parse_response(head: bytes) -> tuple[int, dict[str, str]]:
    start, headers = _split_head(head)
    return int(start.split(" ", 2)[1]), headers


def _split_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _without_header(head: bytes, name: str) -> bytes:
    lines = head.split(b"\r\n")
    kept = [line for line in lines if line.split(b":", 1)[0].strip().lower() != name.encode()]
    return b"\r\n".join(kept)


def _framed(headers: dict[str, str]) -> bool:
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    return chunked or "content-length" in headers


def _has_body(method: str, status: int) -> bool:
    return method != "HEAD" and status >= 200 and status not in (204, 304)


def _answer(method: str, status: int, retry_after: str | None, *, close: bool = False) -> bytes:
    body = f'{{"errors": [{{"code": "INJECTED", "message": "fault proxy {status}"}}]}}'.encode()
    lines = [f"HTTP/1.1 {status} Injected", "Content-Type: application/json",
             f"Content-Length: {len(body)}"]  # fmt: skip
    if retry_after is not None:
        lines.append(f"Retry-After: {retry_after}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body if method != "HEAD" else b"")


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not an orderly end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
