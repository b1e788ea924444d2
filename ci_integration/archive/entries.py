"""What a save finds in its folders, and in which order: the one walk that both the
listing (archive/walk.py) and the read-ahead process (archive/read_ahead.py) follow,
so that the files one asks the disk for are the files the other reads next.

Standard library only: the read-ahead process imports this without site-packages.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

# Reading a file does not move its access time (where the kernel lets us: our own
# files, or root): a save is not a use, and each moved atime is an inode to write.
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)


class Found(NamedTuple):
    root: int  # the position of its root among the roots walked
    relative: str  # below the root, "/"-separated; "" is the root itself
    path: str | Path
    info: os.stat_result  # of the path itself (a root's: of what it leads to)


def walk(roots: Sequence[str | Path], skipped: Callable[[str], None]) -> Iterator[Found]:
    """Every folder, file and symlink under ``roots`` (one ``lstat`` each), a folder
    before what it holds, the names of a folder in sorted order. What is missing,
    cannot be listed, or is neither of the three is told to ``skipped``, and left out.
    """
    for index, root in enumerate(roots):
        try:
            info = os.stat(root)
        except FileNotFoundError:
            skipped(f"{root} does not exist")
            continue
        if stat.S_ISDIR(info.st_mode):
            yield Found(index, "", root, info)
            yield from _folder(index, root, "", skipped)
        elif stat.S_ISREG(info.st_mode):
            yield Found(index, "", root, info)
        else:
            skipped(f"{root} is neither a file nor a folder")


def _folder(
    root: int, folder: str | Path, prefix: str, skipped: Callable[[str], None]
) -> Iterator[Found]:
    try:
        with os.scandir(folder) as listed:
            children = sorted(listed, key=lambda entry: entry.name)
    except OSError as exc:
        skipped(f"cannot list {folder}: {exc.strerror}")
        return
    for child in children:
        try:
            info = child.stat(follow_symlinks=False)
        except OSError as exc:
            skipped(f"{child.path}: {exc.strerror}")
            continue
        relative = f"{prefix}/{child.name}" if prefix else child.name
        if stat.S_ISDIR(info.st_mode):
            yield Found(root, relative, child.path, info)
            yield from _folder(root, child.path, relative, skipped)
        elif stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
            yield Found(root, relative, child.path, info)
        else:
            skipped(f"{child.path} is a special file")


def open_for_reading(path: str | Path) -> int:
    """A descriptor to read ``path`` without moving its access time where the kernel
    allows it (O_NOATIME is refused on a file of another owner); raises OSError."""
    try:
        return os.open(path, _READ_FLAGS)
    except PermissionError:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
