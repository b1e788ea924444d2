"""The files of a tree written into fresh folders by a pool of threads, a pack a task.

A task fetches its pack (download, verify, decompress) and writes every piece of it
where the tree says, so fetching and writing overlap across packs and the kernel's
work of creating files runs on every core. A file held in one piece, nearly every
file of a folder, is finished in one pass: created with its bytes, its mode and its
time, and closed. A file of several pieces gets its mode and time from whichever task
writes its last piece.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from ci_integration.archive.tree import FILE, Record, Tree, collection_paused

# Restored files get their saved permissions, but never setuid or setgid.
MODE_MASK = 0o1777
# The folders are new and hold no symlink until every file is written; NOFOLLOW is a
# second guard all the same.
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = _WRITE_FLAGS | os.O_EXCL


def write_files(
    tree: Tree,
    folders: list[Path],
    fetch_pack: Callable[[int], bytes],
    on_bytes: Callable[[int], None],
    workers: int,
) -> None:
    """Every file record of ``tree`` written under ``folders`` (one per root), whose
    folders already exist. Raises the first error a task met, once every task stopped."""
    with collection_paused():
        plan = _Plan(tree, folders)
    for record in plan.empty:
        plan.write_whole(record, memoryview(b""))
    pool = concurrent.futures.ThreadPoolExecutor(workers, "ci-integration-write")
    try:
        tasks = [
            pool.submit(plan.write_pack, pack, fetch_pack, on_bytes) for pack in sorted(plan.packs)
        ]
        for task in concurrent.futures.as_completed(tasks):
            task.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Plan:
    """Where each piece of each pack goes, and how many pieces each file still waits for."""

    def __init__(self, tree: Tree, folders: list[Path]) -> None:
        self.tree = tree
        self.folders = [str(folder) for folder in folders]
        self.empty: list[Record] = []
        # pack -> piece -> [(record, offset in the file)]
        self.packs: dict[int, dict[int, list[tuple[Record, int]]]] = defaultdict(dict)
        self._pieces_left: dict[int, int] = {}  # id(record) -> pieces not yet written
        self._lock = threading.Lock()
        self._umask = _umask()
        for record in tree.records:
            if record.type != FILE:
                continue
            if not record.pieces:
                self.empty.append(record)
                continue
            if len(record.pieces) > 1:
                self._pieces_left[id(record)] = len(record.pieces)
            offset = 0
            for index in record.pieces:
                piece = tree.pieces[index]
                self.packs[piece.pack].setdefault(index, []).append((record, offset))
                offset += piece.length

    def path(self, record: Record) -> str:
        folder = self.folders[record.root]
        return f"{folder}/{record.path}" if record.path else folder

    def write_pack(
        self, pack: int, fetch_pack: Callable[[int], bytes], on_bytes: Callable[[int], None]
    ) -> None:
        data = memoryview(fetch_pack(pack))
        written = 0
        for index, destinations in self.packs[pack].items():
            piece = self.tree.pieces[index]
            view = data[piece.offset : piece.offset + piece.length]
            for record, offset in destinations:
                if len(record.pieces) == 1:
                    self.write_whole(record, view)
                else:
                    self._write_part(record, view, offset)
            written += piece.length * len(destinations)
        on_bytes(written)

    def write_whole(self, record: Record, view: memoryview) -> None:
        """A file of one piece (or none): created with its mode, written, timed, closed."""
        mode = record.mode & MODE_MASK
        fd = os.open(self.path(record), _CREATE_FLAGS, mode)
        try:
            written = os.write(fd, view)
            if written < len(view):  # a short write, rare: the rest, in a loop
                _write_all(fd, view[written:], written)
            # The mode given to open is cut by the umask: set it again only if it was.
            uncut = self._umask is not None and not mode & (self._umask | ~0o777)
            _set_file_metadata(fd, record, mode_set=uncut)
        finally:
            os.close(fd)

    def _write_part(self, record: Record, view: memoryview, offset: int) -> None:
        fd = os.open(self.path(record), _WRITE_FLAGS, 0o600)
        try:
            _write_all(fd, view, offset)
            with self._lock:
                self._pieces_left[id(record)] -= 1
                last = not self._pieces_left[id(record)]
            if last:
                _set_file_metadata(fd, record)
        finally:
            os.close(fd)


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _umask() -> int | None:
    """The process's umask, read where the kernel tells it (Linux), since setting it to
    read it back would change it for every thread for a moment."""
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii", errors="replace") as status,
    ):
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return None


def _set_file_metadata(fd: int, record: Record, *, mode_set: bool = False) -> None:
    """The saved mode (unless the file already has it) and time, on the open file."""
    if not mode_set:
        os.fchmod(fd, record.mode & MODE_MASK)
    os.utime(fd, ns=(record.mtime_ns, record.mtime_ns))
