"""The paths a cache command names, as actions/cache takes them: folders and files,
``~`` for the job's HOME, and glob patterns (``**/node_modules``, ``!`` to exclude).

The patterns as written are the entry's identity (a restore matches entries saved
with the same ones); the folders they matched at save time are the entry's roots,
and a restore puts each back where it was found, once it is sure the name could
have come from the patterns.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ci_integration.errors import CorruptDataError, UsageError

_GLOB_CHARACTERS = frozenset("*?[")


def is_pattern(path: str) -> bool:
    return path.startswith("!") or bool(_GLOB_CHARACTERS & set(path))


@dataclasses.dataclass(frozen=True)
class CachePaths:
    written: tuple[str, ...]  # as the user wrote them
    cwd: Path
    home: str

    @classmethod
    def of(cls, written: Sequence[str], env: Mapping[str, str], cwd: Path) -> CachePaths:
        paths = cls(tuple(written), cwd, env.get("HOME", "~"))
        if all(path.startswith("!") for path in written):
            raise UsageError("every path is an exclusion (!): name what to cache as well")
        return paths

    @property
    def has_patterns(self) -> bool:
        return any(is_pattern(path) for path in self.written)

    def resolve(self, name: str) -> Path:
        """Where a path is on disk: ``~`` is the job's HOME, the rest from the job's folder."""
        return Path(self._place(name))

    def _place(self, name: str) -> str:
        # Strings, not Paths: a pattern may match 100,000 files, and pathlib is slow.
        if name == "~" or name.startswith("~/"):
            name = self.home + name[1:]
        return os.path.normpath(os.path.join(self.cwd, name))

    def expand(self) -> list[str]:
        """The roots a save takes: literal paths as written, each pattern's matches
        (sorted, less the exclusions', none inside another)."""
        names: list[str] = []
        excluded: set[str] = set()
        for path in self.written:
            if path.startswith("!"):
                excluded.update(self._matches(path[1:]))
            elif is_pattern(path):
                names.extend(sorted(self._matches(path)))
            else:
                names.append(path)
        kept = [name for name in dict.fromkeys(names) if name not in excluded]
        if self.has_patterns:
            kept = self._outermost(kept)
        self.check_disjoint(kept)
        return kept

    def locate(self, names: Sequence[str]) -> list[Path]:
        """Where a restore puts an entry's roots: the paths as written, or, for an
        entry saved from patterns, each name that those patterns could have matched."""
        if not self.has_patterns:
            if list(names) != list(self.written):
                raise CorruptDataError("the entry lists other paths than its manifest")
        else:
            for name in names:
                if not self._could_match(name):
                    raise CorruptDataError(
                        f"the entry names {name[:200]!r}, which none of the paths matches"
                    )
        self.check_disjoint(list(names))
        return [self.resolve(name) for name in names]

    def check_disjoint(self, names: Sequence[str]) -> None:
        """None of ``names`` is another, or inside another: each would be saved twice."""
        paths = [self._place(name) for name in names]
        where: dict[str, str] = {}
        for name, path in zip(names, paths, strict=True):
            if path in where:
                raise UsageError(f"{name} is inside {where[path]}: name the outer folder alone")
            where[path] = name
        for name, path in zip(names, paths, strict=True):
            outer = self._outer(path, where)
            if outer is not None:
                raise UsageError(f"{name} is inside {outer}: name the outer folder alone")

    def refuse_replacing_cwd(self, names: Sequence[str]) -> None:
        """A restore replaces its targets whole: never the folder the job stands in."""
        here = Path(os.path.realpath(self.cwd))
        for name in names:
            real = Path(os.path.realpath(self.resolve(name)))
            if real == here or real in here.parents:
                raise UsageError(
                    f"restoring {name} would replace the working folder itself: pass --merge"
                    " to extract into it, or restore into a subfolder"
                )

    def _matches(self, pattern: str) -> list[str]:
        tilde = pattern == "~" or pattern.startswith("~/")
        expanded = self.home + pattern[1:] if tilde else pattern
        found = [os.path.normpath(name) for name in glob_with_hidden(expanded, str(self.cwd))]
        if tilde:  # kept in the form written, so that another HOME restores it too
            found = ["~" + name[len(self.home) :] for name in found]
        return found

    def _could_match(self, name: str) -> bool:
        parts = name.split("/")
        if ".." in parts or "." in parts or "" in parts[1:]:
            return False
        anchored = name.startswith(("/", "~"))
        for pattern in self.written:
            if pattern.startswith("!") or not is_pattern(pattern):
                continue
            if pattern.startswith(("/", "~")) != anchored:
                continue
            base = _literal_base(os.path.normpath(pattern))
            if name.startswith(base) and fnmatch.fnmatchcase(name, os.path.normpath(pattern)):
                return True
        return False

    def _outermost(self, names: list[str]) -> list[str]:
        """Matches inside another match are saved with it (``**/node_modules`` finds
        both ``a/node_modules`` and ``a/node_modules/b/node_modules``)."""
        paths = [self._place(name) for name in names]
        where = dict(zip(paths, names, strict=True))
        return [
            name
            for name, path in zip(names, paths, strict=True)
            if self._outer(path, where) is None
        ]

    @staticmethod
    def _outer(place: str, where: Mapping[str, str]) -> str | None:
        """The name in ``where`` of a folder that holds ``place``, if one does: a walk up
        its parents, not a comparison with every other name."""
        parent = os.path.dirname(place)
        while parent != place:
            if parent in where:
                return where[parent]
            place, parent = parent, os.path.dirname(parent)
        return None


def _literal_base(pattern: str) -> str:
    """The folders before a pattern's first wildcard: ``src/*/x`` gives ``src/``."""
    first = min((pattern.find(c) for c in _GLOB_CHARACTERS if c in pattern), default=len(pattern))
    head = pattern[:first]
    return head[: head.rfind("/") + 1]


def glob_with_hidden(pattern: str, root_dir: str) -> list[str]:
    """``glob.glob(pattern, root_dir=root_dir, recursive=True, include_hidden=True)``,
    as actions/cache matches (``*`` and ``**`` take names that start with a dot), also
    on Python 3.10, whose glob has no ``include_hidden``. Names are as glob gives them,
    up to ``os.path.normpath``."""
    if sys.version_info >= (3, 11):
        return glob.glob(pattern, root_dir=root_dir, recursive=True, include_hidden=True)
    return walk_pattern(pattern, root_dir)


def walk_pattern(pattern: str, root_dir: str) -> list[str]:
    """The same matches as glob with ``include_hidden``, found part by part."""
    anchor = "/" if pattern.startswith("/") else ""
    parts = [part for part in pattern.split("/") if part]
    found = [anchor]
    for index, part in enumerate(parts):
        folders_only = index < len(parts) - 1 or pattern.endswith("/")
        found = [
            os.path.join(path, name)
            for path in found
            for name in _part_matches(os.path.join(root_dir, path), part, folders_only)
        ]
    # The folder itself is never a match (a pattern that starts with ** takes what is in it).
    existing = (p for p in found if p and os.path.lexists(os.path.join(root_dir, p)))
    return list(dict.fromkeys(existing))


def _part_matches(folder: str, part: str, folders_only: bool) -> Iterator[str]:
    """Names under ``folder`` that one part of a pattern takes ("" for the folder itself)."""
    if part == "**":  # the folder itself and everything below it
        yield ""
        yield from _below(folder, folders_only)
    elif not glob.has_magic(part):
        yield part
    else:
        for entry in _entries(folder):
            if fnmatch.fnmatchcase(entry.name, part) and (not folders_only or entry.is_dir()):
                yield entry.name


def _below(folder: str, folders_only: bool) -> Iterator[str]:
    for entry in _entries(folder):
        is_folder = entry.is_dir()
        if is_folder or not folders_only:
            yield entry.name
        if is_folder:
            yield from (os.path.join(entry.name, name) for name in _below(entry.path, folders_only))


def _entries(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []
