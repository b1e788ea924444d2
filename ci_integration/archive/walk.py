"""Reading folders into a tree: every path recorded, every file's bytes handed to the packer."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from ci_integration.archive.pack import PIECE_SIZE, Packer
from ci_integration.archive.tree import DIRECTORY, FILE, SYMLINK, Record

log = logging.getLogger(__name__)


def scan(roots: list[Path], packer: Packer, on_bytes: Callable[[int], None]) -> list[Record]:
    """Records for every root that exists; a missing root is skipped with a warning."""
    records: list[Record] = []
    for index, root in enumerate(roots):
        try:
            info = os.stat(root)
        except FileNotFoundError:
            log.warning("not saved: %s does not exist", root)
            continue
        if stat.S_ISDIR(info.st_mode):
            records.append(_record(index, "", DIRECTORY, info))
            _scan_folder(index, root, "", packer, on_bytes, records)
        elif stat.S_ISREG(info.st_mode):
            records.append(_file_record(index, "", root, info, packer, on_bytes))
        else:
            log.warning("not saved: %s is neither a file nor a folder", root)
    return records


def measure(roots: list[Path]) -> int:
    """The bytes a scan of ``roots`` will read, from one ``lstat`` of each entry: the
    total a save's progress counts towards."""
    total = 0
    pending: list[str | Path] = []
    for root in roots:
        try:
            info = os.stat(root)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            total += info.st_size
        elif stat.S_ISDIR(info.st_mode):
            pending.append(root)
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


def _scan_folder(
    root_index: int,
    folder: str | Path,
    prefix: str,
    packer: Packer,
    on_bytes: Callable[[int], None],
    records: list[Record],
) -> None:
    try:
        children = sorted(os.scandir(folder), key=lambda entry: entry.name)
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
                records.append(_record(root_index, relative, SYMLINK, info, target=target))
            elif stat.S_ISDIR(info.st_mode):
                records.append(_record(root_index, relative, DIRECTORY, info))
                _scan_folder(root_index, child.path, relative, packer, on_bytes, records)
            elif stat.S_ISREG(info.st_mode):
                records.append(
                    _file_record(root_index, relative, child.path, info, packer, on_bytes)
                )
            else:
                log.warning("not saved: %s is a special file", child.path)
        except OSError as exc:
            log.warning("not saved: %s: %s", child.path, exc.strerror)


def _file_record(
    root_index: int,
    relative: str,
    path: str | Path,
    info: os.stat_result,
    packer: Packer,
    on_bytes: Callable[[int], None],
) -> Record:
    record = _record(root_index, relative, FILE, info)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # The size seen when listing is what is saved: a file that grows while it
        # is read is cut there, one that shrinks ends where it ends.
        left = info.st_size

        def readinto(view: memoryview) -> int:
            return os.readv(fd, [view])

        while left > 0 and (piece := packer.read_piece(readinto, min(left, PIECE_SIZE))):
            index, count = piece
            record.pieces.append(index)
            record.size += count
            left -= count
            on_bytes(count)
    finally:
        os.close(fd)
    return record


def _record(root: int, relative: str, kind: str, info: os.stat_result, target: str = "") -> Record:
    mode = stat.S_IMODE(info.st_mode)
    return Record(root, relative, kind, mode, info.st_mtime_ns, target=target)
