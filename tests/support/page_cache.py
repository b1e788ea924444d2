"""What of a file the page cache holds, read with util-linux's ``fincore``, and how to
empty it, for tests of code that reads ahead or hands pages back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def resident(path: Path) -> int:
    """Bytes of ``path`` in the page cache."""
    (count,) = resident_each([path])
    return count


def resident_each(paths: list[Path]) -> list[int]:
    """Bytes of each of ``paths`` in the page cache, asked of one ``fincore``."""
    out = subprocess.run(
        ["fincore", "--bytes", "--json", "--output", "RES,FILE", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    by_file = {row["file"]: int(row["res"]) for row in json.loads(out)["fincore"]}
    return [by_file[str(path)] for path in paths]


def evicted(files: list[Path]) -> None:
    """``files`` written out and dropped from the page cache."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def need_fincore() -> None:
    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is not installed")


def need_evictable(files: list[Path]) -> None:
    """Skip where the file system keeps ``files`` in memory whatever is asked (tmpfs)."""
    evicted(files)
    if any(resident(path) for path in files):
        pytest.skip("this file system keeps its files in memory (tmpfs?)")
