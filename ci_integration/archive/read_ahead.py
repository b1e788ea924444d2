"""Asking the disk for a folder's files ahead of the save that reads them, from a
process of its own.

A cold folder of small files is read one small request at a time, each a wait on the
disk, unless the kernel is told what comes next. Telling it (open, POSIX_FADV_WILLNEED,
close) is system calls in which the kernel finds each file and sends its requests:
about 1.5 CPU-seconds for the 27,000 files of ``bench cache``'s mixed folder. A thread
of the saving process did this once; but two Python threads that both call the kernel
for every file hand the interpreter's lock to each other at each call, which cost 1.7
CPU-seconds more, and a save of many files is bound by the CPU. A process has a lock of
its own.

It walks the same files in the same order as the listing (archive/entries.py) and
stays at most WINDOW_BYTES ahead of the bytes the reader says it has read (each count
an 8-byte integer on its stdin), so that what it asked for is still in memory when the
reader gets there. It is only a hint: if it cannot start, or dies, the save reads the
same bytes, more slowly. If the save is killed outright, the process ends at its
next wait for the reader (its stdin closes with the save) or with its walk. It
imports nothing beyond the standard library and this package's ``entries`` and
``process``, so it starts without site-packages.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ci_integration import process
from ci_integration.archive import entries

# How far ahead of the reader the disk is asked, in bytes. bench/cache_directory.py:
# a cold folder of small files reads in about half the time with 64 MiB ahead than
# one file at a time.
WINDOW_BYTES = 64 * 1024 * 1024
# A large file is asked for a slice at a time, each counted against the window.
_SLICE = 8 * 1024 * 1024
# Started once the reader has read this many pieces, or bytes: a process takes some
# 20 ms to start, in which a few files are read anyway.
START_AFTER = (64, 8 * 1024 * 1024)
# The reader reports what it has read every REPORT_EVERY bytes.
REPORT_EVERY = 4 * 1024 * 1024
_COUNT = struct.Struct("<q")

# The process's program: this module's main, imported from where this package is
# (after the standard library, which no module there may shadow).
_PROGRAM = (
    "import sys; sys.path.append(sys.argv.pop(1)); "
    "from ci_integration.archive.read_ahead import main; main(sys.argv[1:])"
)


class ReadAhead:
    """The read-ahead process for ``roots``, told by ``advance`` how far the reader has
    come. It starts once the reader has read ``start_after`` pieces or bytes (a folder
    of a few files is read before a process could start), and leaving the block stops
    it (killed and reaped)."""

    def __init__(
        self,
        roots: Sequence[str | Path],
        window: int = WINDOW_BYTES,
        start_after: tuple[int, int] = START_AFTER,
    ) -> None:
        self.roots = roots
        self.window = window
        self.start_after = start_after
        self._pieces = 0
        self._read = 0
        self._told = 0
        self._stack = contextlib.ExitStack()
        self._send: process.Sender | None = None
        self.started = False

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    def advance(self, count: int) -> None:
        """One more piece of ``count`` bytes has been read."""
        self._pieces += 1
        self._read += count
        if not self.started:
            pieces, read = self.start_after
            if self._pieces >= pieces or self._read >= read:
                self._start()
        elif self._send is not None and self._read - self._told >= REPORT_EVERY:
            self._tell()

    def _start(self) -> None:
        self.started = True
        package_parent = Path(__file__).resolve().parents[2]
        argv = [sys.executable, "-I", "-S", "-c", _PROGRAM, str(package_parent)]
        argv += [str(self.window), *map(str, self.roots)]
        self._send = self._stack.enter_context(process.companion(argv))
        if self._send is not None:
            self._tell()

    def _tell(self) -> None:
        assert self._send is not None
        self._told = self._read
        if not self._send(_COUNT.pack(self._read)):
            self._send = None


def main(argv: Sequence[str]) -> None:
    """The process: ``WINDOW ROOT...``; ends with the walk, or once stdin closes."""
    window, roots = int(argv[0]), argv[1:]
    read = asked = 0
    with contextlib.suppress(KeyboardInterrupt):
        for found in entries.walk(roots, skipped=lambda why: None):
            if not stat.S_ISREG(found.info.st_mode):
                continue
            size = found.info.st_size
            try:
                fd = entries.open_for_reading(found.path)
            except OSError:
                continue
            try:
                for offset in range(0, size, _SLICE):
                    while asked - read > window:
                        read = _latest_count(read)
                        if read < 0:
                            return
                    length = min(size - offset, _SLICE)
                    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
                    asked += length
            except OSError:
                pass
            finally:
                os.close(fd)


def _latest_count(current: int) -> int:
    """The newest count on stdin, waiting for one; -1 once stdin is closed."""
    data = os.read(0, 4096)  # whole counts: each is written at once, and 4096 is 512 of them
    if not data:
        return -1
    (count,) = _COUNT.unpack_from(data, len(data) - _COUNT.size)
    return max(current, int(count))
