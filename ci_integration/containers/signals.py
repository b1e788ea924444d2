"""Stop requests: SIGTERM, SIGINT and SIGHUP recorded, never raised, while a container
exists, so no signal can cut a create, a start or a stop in half.

Each signal's number lands in a pipe (``signal.set_wakeup_fd``), which the run
loop waits on beside the container's exit. Where nothing is at stake yet (the
engine's ping, an image pull), ``interruptible()`` makes a signal raise
``Interrupted`` at once instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from ci_integration.errors import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopRequests:
    """A context: inside it, stop signals are recorded in order and wake ``fileno()``."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._raise_now = False
        self._read_fd = self._write_fd = -1
        self._previous_handlers: dict[int, object] = {}
        self._previous_wakeup_fd = -1

    def __enter__(self) -> StopRequests:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)

    def fileno(self) -> int:
        """Readable once a stop signal has come in (select on it)."""
        return self._read_fd

    @property
    def first(self) -> int | None:
        self._drain()
        return self.received[0] if self.received else None

    def raise_if_stopped(self) -> None:
        signum = self.first
        if signum is not None:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Inside, a stop signal raises Interrupted at once: for steps that leave
        nothing behind when cut short."""
        self.raise_if_stopped()
        self._raise_now = True
        try:
            yield
        finally:
            self._raise_now = False

    def _handle(self, signum: int, frame: object) -> None:
        # The C-level handler has already written the number to the pipe; _drain reads it.
        if self._raise_now:
            self._raise_now = False
            self._drain()
            raise Interrupted(signum)

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except BlockingIOError:
                return
            if not data:
                return
            self.received.extend(signum for signum in data if signum in STOP_SIGNALS)
