"""Writing a tree back to disk, all or nothing.

Each root is rebuilt in a fresh folder beside its target and moved in only once
every byte of every root has been fetched, verified and written: a failure while
fetching or writing leaves the targets as they were and no temp folder behind.
Symlinks are created last, as they were saved, and nothing is ever written
through one.

A root replaces its target whole, or, merged, is moved in over what is there
(files of the cache replace theirs, others stay), as ``tar -x`` does. A target
that is a symlink is followed: the folder it leads to is restored.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ci_integration.archive.tree import DIRECTORY, FILE, SYMLINK, Record, Tree
from ci_integration.archive.write import MODE_MASK, write_files
from ci_integration.errors import CacheError
from ci_integration.process import pid_alive

log = logging.getLogger(__name__)

_EXAMPLES = 3


class Removed(NamedTuple):
    """What a restore took away from a target: entries that were not in the cache."""

    target: Path
    files: int  # and links
    examples: list[str]  # a few of them, relative to the target


def extract(
    tree: Tree,
    targets: list[Path],
    fetch_pack: Callable[[int], bytes],
    on_bytes: Callable[[int], None],
    workers: int = 4,
    *,
    merge: bool = False,
) -> list[Removed]:
    """Rebuild every root of ``tree`` at ``targets`` (same order as tree.roots).

    Returns, for each target that lost files the cache does not hold, how many.
    """
    targets = [_followed(target) for target in targets]
    _check_disk_space(tree, targets)
    by_root: list[list[Record]] = [[] for _ in targets]
    for record in tree.records:
        by_root[record.root].append(record)
    temps = [_temp_name(target, "new") for target in targets]
    not_moved_in = set(range(len(targets)))
    removed: list[Removed] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            _remove_leftovers(target)
        for temp, records in zip(temps, by_root, strict=True):
            _create_folders(temp, records)
        write_files(tree, temps, fetch_pack, on_bytes, workers)
        for temp, records in zip(temps, by_root, strict=True):
            _finish_root(temp, records)
        for index, (target, temp, records) in enumerate(zip(targets, temps, by_root, strict=True)):
            if not records:
                continue
            if merge and _is_folder(target) and _holds_folder_root(records):
                count, examples = _merge_in(temp, target, records)
            else:
                count, examples = _swap_in(temp, target, records)
            not_moved_in.discard(index)
            if count:
                removed.append(Removed(target, count, examples))
    finally:
        for index in not_moved_in:
            _remove(temps[index])
    return removed


def _followed(target: Path) -> Path:
    """The folder a symlinked target leads to, so that the link stays a link."""
    if not os.path.islink(target):
        return target
    real = Path(os.path.realpath(target))
    log.info("%s is a symlink: restoring into %s", target, real)
    return real


def _holds_folder_root(records: list[Record]) -> bool:
    return any(not record.path and record.type == DIRECTORY for record in records)


def _is_folder(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISDIR(os.lstat(path).st_mode)
    return False


def _path(temp: Path, record: Record) -> Path:
    return temp / record.path if record.path else temp


def _create_folders(temp: Path, records: list[Record]) -> None:
    for record in records:
        if record.type == DIRECTORY:
            os.mkdir(_path(temp, record), 0o700)


def _finish_root(temp: Path, records: list[Record]) -> None:
    """Symlinks, then the folders' and links' permissions and times, deepest first so
    that folders close last (files got theirs when they were written)."""
    # Every other path of the tree is a real folder or file created here (the tree
    # has no path below a symlink), so the links change where nothing is written.
    folders_and_links = [record for record in records if record.type != FILE]
    for record in folders_and_links:
        if record.type == SYMLINK:
            os.symlink(record.target, _path(temp, record))
    for record in sorted(folders_and_links, key=_depth, reverse=True):
        _set_metadata(_path(temp, record), record)


def _set_metadata(path: Path, record: Record) -> None:
    times = (record.mtime_ns, record.mtime_ns)
    if record.type == SYMLINK:
        os.utime(path, ns=times, follow_symlinks=False)
    else:
        os.chmod(path, stat.S_IMODE(record.mode) & MODE_MASK)
        os.utime(path, ns=times)


def _depth(record: Record) -> int:
    return record.path.count("/") + bool(record.path)


def _swap_in(temp: Path, target: Path, records: list[Record]) -> tuple[int, list[str]]:
    """Replace ``target`` with ``temp``; count what the target held that ``records`` lack."""
    old = None
    if os.path.lexists(target):
        old = _temp_name(target, "old")
        os.rename(target, old)
    try:
        os.rename(temp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is None:
        return 0, []
    try:
        return _not_saved(old, {record.path for record in records})
    finally:
        _remove(old)


def _not_saved(old: Path, saved: set[str]) -> tuple[int, list[str]]:
    """Files and links under ``old`` (a replaced target) that the cache did not hold."""
    if not _is_folder(old):
        return 0, []
    count, examples = 0, list[str]()
    for folder, dirs, files in os.walk(old):
        relative = os.path.relpath(folder, old)
        prefix = "" if relative == "." else relative + "/"
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            if prefix + name not in saved:
                count += 1
                if len(examples) < _EXAMPLES:
                    examples.append(prefix + name)
    return count, sorted(examples)


def _merge_in(temp: Path, target: Path, records: list[Record]) -> tuple[int, list[str]]:
    """Move every entry of ``temp`` into the folder ``target``, over what is there.

    Only real folders of the target are entered: a symlink, or a file, where the
    cache has a folder is replaced by the folder, so no entry lands through a link.
    Returns what was removed because the cache holds something of another kind there.
    """
    moved: set[str] = set()
    kept_folders: list[Record] = []
    count, examples = 0, list[str]()
    for record in sorted(records, key=_depth):
        if not record.path:
            kept_folders.append(record)
            continue
        parent = record.path.rpartition("/")[0]
        if parent in moved:
            moved.add(record.path)  # it came with its folder
            continue
        source, destination = temp / record.path, target / record.path
        if record.type == DIRECTORY and _is_folder(destination):
            kept_folders.append(record)
            continue
        if _is_folder(destination) or (record.type == DIRECTORY and os.path.lexists(destination)):
            count += 1
            if len(examples) < _EXAMPLES:
                examples.append(record.path)
            _remove(destination)
        os.replace(source, destination)
        moved.add(record.path)
    for record in sorted(kept_folders, key=_depth, reverse=True):
        _set_metadata(target / record.path if record.path else target, record)
    _remove(temp)
    return count, examples


def _temp_name(target: Path, kind: str) -> Path:
    # The pid lets a later restore tell a leftover of a killed one from a live one.
    return (
        target.parent / f".{target.name}.ci-integration-{kind}-{os.getpid()}-{os.urandom(4).hex()}"
    )


def _remove_leftovers(target: Path) -> None:
    """Temp folders of restores of this target that were killed outright."""
    prefix = f".{target.name}.ci-integration-"
    for sibling in target.parent.glob(glob.escape(prefix) + "*"):
        parts = sibling.name[len(prefix) :].split("-")
        if len(parts) == 3 and parts[1].isdigit() and not pid_alive(int(parts[1])):
            _remove(sibling)


def _remove(path: Path) -> None:
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        # Saved folder modes may forbid deleting their content; open them up first.
        for folder, _, _ in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(folder, 0o700)
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _check_disk_space(tree: Tree, targets: list[Path]) -> None:
    needed = tree.raw_size
    probe = next((p for p in targets[0].parents if p.exists()), Path("/")) if targets else None
    if probe is None:
        return
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise CacheError(
            f"restoring needs {needed} bytes but {probe} has {free} free: free some disk space"
        )
