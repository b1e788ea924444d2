"""Reading folders into a tree: every path recorded, every file's bytes handed to the
packer, in listing order.

A cold folder of small files is read one small request at a time, each a wait on the
disk, unless the kernel is told what comes next. So a thread of its own walks the
folder and opens the files ahead of the one being read, their pages asked for
(``POSIX_FADV_WILLNEED``): the disk serves many requests at once, listing and
reading overlap, and the packer, single-threaded so that pieces fall on the same
boundaries every time, reads from memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from ci_integration.archive.pack import PIECE_SIZE, Packer
from ci_integration.archive.tree import DIRECTORY, FILE, SYMLINK, Record, collection_paused

log = logging.getLogger(__name__)

# How far the walk runs ahead of the packer, in bytes asked of the disk and in files
# held open. bench/cache_directory.py: a cold folder of small files reads in about
# half the time with 64 MiB ahead than one file at a time.
READ_AHEAD_BYTES = 64 * 1024 * 1024
READ_AHEAD_FILES = 256
# Reading a file does not move its access time (where the kernel lets us: our own
# files, or root): a save is not a use, and each moved atime is an inode to write.
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)


class FileToRead(NamedTuple):
    record: Record
    path: str | Path
    size: int  # as listed: what is read, however the file changes meanwhile


def scan(
    roots: list[Path],
    packer: Packer,
    on_bytes: Callable[[int], None],
    on_listed: Callable[[int], None] = lambda total: None,
) -> list[Record]:
    """Records for every path under ``roots``, each file's bytes in ``packer``.

    ``on_listed`` is told the bytes of all the files once the walk has found them
    all, while reading goes on. A missing root is skipped with a warning, and so is
    anything that is not a file, a folder or a symlink, or cannot be read.
    """
    listing = Listing(roots)

    def walked() -> Iterator[FileToRead]:
        yield from listing.files()
        on_listed(listing.file_bytes)

    with collection_paused():
        unreadable = read_files(walked(), packer, on_bytes)
    if not unreadable:
        return listing.records
    return [record for record in listing.records if id(record) not in unreadable]


class Listing:
    """Every path under some roots (one ``lstat`` each), found as ``files`` is walked."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self.records: list[Record] = []
        self.file_bytes = 0

    def files(self) -> Iterator[FileToRead]:
        """The files to read, in the order of ``records``, which grows as this goes."""
        for index, root in enumerate(self.roots):
            try:
                info = os.stat(root)
            except FileNotFoundError:
                log.warning("not saved: %s does not exist", root)
                continue
            if stat.S_ISDIR(info.st_mode):
                self.records.append(_record(index, "", DIRECTORY, info))
                yield from self._folder(index, root, "")
            elif stat.S_ISREG(info.st_mode):
                yield self._file(index, "", root, info)
            else:
                log.warning("not saved: %s is neither a file nor a folder", root)

    def _folder(self, root_index: int, folder: str | Path, prefix: str) -> Iterator[FileToRead]:
        try:
            with os.scandir(folder) as entries:
                children = sorted(entries, key=lambda entry: entry.name)
        except OSError as exc:
            log.warning("not saved: cannot list %s: %s", folder, exc.strerror)
            return
        for child in children:
            relative = f"{prefix}/{child.name}" if prefix else child.name
            try:
                info = child.stat(follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    # Kept as written, wherever it points: a virtualenv's python leads
                    # out of the folder. A restore never writes through one.
                    target = os.readlink(child.path)
                    self.records.append(_record(root_index, relative, SYMLINK, info, target))
                    continue
            except OSError as exc:
                log.warning("not saved: %s: %s", child.path, exc.strerror)
                continue
            if stat.S_ISDIR(info.st_mode):
                self.records.append(_record(root_index, relative, DIRECTORY, info))
                yield from self._folder(root_index, child.path, relative)
            elif stat.S_ISREG(info.st_mode):
                yield self._file(root_index, relative, child.path, info)
            else:
                log.warning("not saved: %s is a special file", child.path)

    def _file(self, root: int, relative: str, path: str | Path, info: os.stat_result) -> FileToRead:
        record = _record(root, relative, FILE, info)
        self.records.append(record)
        self.file_bytes += info.st_size
        return FileToRead(record, path, info.st_size)


def read_files(
    files: Iterable[FileToRead], packer: Packer, on_bytes: Callable[[int], None]
) -> set[int]:
    """Every file's bytes into ``packer``, in order; returns the ids of the records of
    the files that could not be read (each said in a warning)."""
    unreadable: set[int] = set()
    for file, fd in _opened_ahead(files):
        if fd is None:
            unreadable.add(id(file.record))
            continue
        try:
            _read_file(file, fd, packer, on_bytes)
        except OSError as exc:
            log.warning("not saved: %s: %s", file.path, exc.strerror)
            unreadable.add(id(file.record))
        finally:
            os.close(fd)
    return unreadable


def _opened_ahead(files: Iterable[FileToRead]) -> Iterator[tuple[FileToRead, int | None]]:
    """Each file with a descriptor (None if it could not be opened, with a warning),
    opened and its first bytes asked of the disk up to READ_AHEAD_BYTES ahead of its
    turn, by a thread of its own that also walks ``files``: listing and asking wait
    on the disk, and the packer must not. The caller closes each descriptor it gets."""
    window = _Window()
    opened: queue.SimpleQueue[tuple[FileToRead, int | None, int] | None] = queue.SimpleQueue()
    failure: list[BaseException] = []

    def open_ahead() -> None:
        try:
            for file in files:
                length = min(file.size, READ_AHEAD_BYTES)
                if not window.take(length):
                    return
                fd = _open(file.path)
                if fd is not None and length:
                    _advise(fd, 0, length)
                opened.put((file, fd, length))
        except BaseException as exc:  # handed to the reader, which raises it
            failure.append(exc)
        finally:
            opened.put(None)

    opener = threading.Thread(target=open_ahead, name="ci-integration-read-ahead", daemon=True)
    opener.start()
    ended = False
    try:
        while (item := opened.get()) is not None:
            file, fd, length = item
            window.give_back(length)
            yield file, fd
        ended = True
        if failure:
            raise failure[0]
    finally:
        window.close()
        opener.join()
        while not ended and (item := opened.get()) is not None:
            if item[1] is not None:
                os.close(item[1])


class _Window:
    """How far the opener may run ahead: files open and bytes asked for, not yet read."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._files = 0
        self._bytes = 0
        self._closed = False

    def take(self, length: int) -> bool:
        """Wait for room for one more file of ``length`` bytes; False once closed."""
        with self._changed:
            self._changed.wait_for(self._has_room_or_closed)
            if self._closed:
                return False
            self._files += 1
            self._bytes += length
            return True

    def give_back(self, length: int) -> None:
        with self._changed:
            self._files -= 1
            self._bytes -= length
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _has_room_or_closed(self) -> bool:
        if self._closed or not self._files:  # a file larger than the window goes alone
            return True
        return self._files < READ_AHEAD_FILES and self._bytes < READ_AHEAD_BYTES


def _open(path: str | Path) -> int | None:
    try:
        try:
            return os.open(path, _READ_FLAGS)
        except PermissionError:
            # O_NOATIME is refused for a file of another owner: read it the usual way.
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("not saved: %s: %s", path, exc.strerror)
        return None


def _advise(fd: int, offset: int, length: int) -> None:
    # Only a hint: a file system without it reads as it would have anyway.
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)


def _read_file(file: FileToRead, fd: int, packer: Packer, on_bytes: Callable[[int], None]) -> None:
    record = file.record

    def readinto(view: memoryview) -> int:
        return os.readv(fd, [view])

    # The size seen when listing is what is saved: a file that grows while it is read
    # is cut there, one that shrinks ends where it ends.
    left = file.size
    while left > 0:
        if left > PIECE_SIZE:  # a large file: the next piece asked for while this one is read
            _advise(fd, record.size + PIECE_SIZE, min(left - PIECE_SIZE, PIECE_SIZE))
        piece = packer.read_piece(readinto, min(left, PIECE_SIZE))
        if piece is None:
            break
        index, count = piece
        record.pieces.append(index)
        record.size += count
        left -= count
        on_bytes(count)


def _record(root: int, relative: str, kind: str, info: os.stat_result, target: str = "") -> Record:
    mode = stat.S_IMODE(info.st_mode)
    return Record(root, relative, kind, mode, info.st_mtime_ns, target=target)
