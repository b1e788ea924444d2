"""Reading folders into a tree: every path recorded, every file's bytes handed to the
packer, in listing order.

The packer reads one file after another, single-threaded, so that pieces fall on the
same boundaries every time. What keeps it from waiting on the disk for each small
file is the read-ahead process (archive/read_ahead.py), which asks the disk for the
files it will read next.
"""

from __future__ import annotations

import collections
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from ci_integration.archive import entries
from ci_integration.archive.pack import PIECE_SIZE, Packer
from ci_integration.archive.read_ahead import ReadAhead
from ci_integration.archive.tree import DIRECTORY, FILE, SYMLINK, Record, collection_paused

log = logging.getLogger(__name__)

# How far the walk runs ahead of the file being read, in files and in their bytes, so
# that the total of a folder of a few large files is known (``on_listed``) while the
# first is read, and a progress line can say how far the save is.
LIST_AHEAD_FILES = 256
LIST_AHEAD_BYTES = 64 * 1024 * 1024


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

    with ReadAhead(roots) as ahead, collection_paused():

        def read(count: int) -> None:
            ahead.advance(count)
            on_bytes(count)

        unreadable = read_files(walked(), packer, read)
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
        for found in entries.walk(self.roots, skipped=_not_saved):
            kind = stat.S_IFMT(found.info.st_mode)
            if kind == stat.S_IFREG:
                yield self._file(found.root, found.relative, found.path, found.info)
            elif kind == stat.S_IFDIR:
                self.records.append(_record(found.root, found.relative, DIRECTORY, found.info))
            else:
                try:
                    # Kept as written, wherever it points: a virtualenv's python leads
                    # out of the folder. A restore never writes through one.
                    target = os.readlink(found.path)
                except OSError as exc:
                    _not_saved(f"{found.path}: {exc.strerror}")
                    continue
                record = _record(found.root, found.relative, SYMLINK, found.info, target)
                self.records.append(record)

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
    for file in _listed_ahead(files):
        try:
            fd = entries.open_for_reading(file.path)
        except OSError as exc:
            _not_saved(f"{file.path}: {exc.strerror}")
            unreadable.add(id(file.record))
            continue
        try:
            _read_file(file, fd, packer, on_bytes)
        except OSError as exc:
            _not_saved(f"{file.path}: {exc.strerror}")
            unreadable.add(id(file.record))
        finally:
            os.close(fd)
    return unreadable


def _listed_ahead(files: Iterable[FileToRead]) -> Iterator[FileToRead]:
    """``files`` in order, each handed out once up to LIST_AHEAD_FILES (and
    LIST_AHEAD_BYTES) more have been taken from ``files``, or all there are."""
    ahead: collections.deque[FileToRead] = collections.deque()
    bytes_after_first = 0
    walk = iter(files)
    walked = False
    while True:
        while not walked and (
            len(ahead) < 2
            or (len(ahead) <= LIST_AHEAD_FILES and bytes_after_first < LIST_AHEAD_BYTES)
        ):
            file = next(walk, None)
            if file is None:
                walked = True
            else:
                bytes_after_first += file.size if ahead else 0
                ahead.append(file)
        if not ahead:
            return
        yield ahead.popleft()
        if ahead:
            bytes_after_first -= ahead[0].size


def _read_file(file: FileToRead, fd: int, packer: Packer, on_bytes: Callable[[int], None]) -> None:
    record = file.record

    def readinto(view: memoryview) -> int:
        return os.readv(fd, [view])

    # The size seen when listing is what is saved: a file that grows while it is read
    # is cut there, one that shrinks ends where it ends.
    left = file.size
    while left > 0:
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


def _not_saved(why: str) -> None:
    log.warning("not saved: %s", why)
