"""Which files of a build context one COPY/ADD source selects, as BuildKit copies them:
Go filepath.Match wildcards per path component, directories walked, symlinks followed
into the context, .dockerignore applied.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path

from ci_integration.images.dockerignore import DockerIgnore

_GLOB_CHARACTERS = frozenset("*?[\\")


def select_files(context: Path, source: str, ignore: DockerIgnore) -> Iterator[str]:
    """The files (and symlinks) below the context that one source copies, and the
    folders below a copied folder (ending in ``/``: an empty one is copied too)."""
    # COPY resolves sources inside the context: "/x" and "../x" both mean "x".
    relative = posixpath.normpath("/" + source).lstrip("/") or "."
    for match in _glob(context, relative):
        yield from _files_under(context, match, ignore)
        target = _symlink_target_inside(context, match)
        if target is not None:
            # COPY follows a source that is a symlink: what it points to is copied too.
            yield from _files_under(context, target, ignore)


def _symlink_target_inside(context: Path, relative: str) -> str | None:
    """Where a symlink points, relative to the context, if it is a symlink into it."""
    path = context / relative
    if not path.is_symlink():
        return None
    root = os.path.realpath(context)
    target = os.path.realpath(path)
    if target == root or not target.startswith(root + os.sep) or not os.path.exists(target):
        return None
    return os.path.relpath(target, root).replace(os.sep, "/")


def _glob(context: Path, relative: str) -> list[str]:
    """The paths a source names, wildcards matched per component as Go's filepath.Match."""
    if relative == ".":
        return ["."] if context.is_dir() else []
    if not _GLOB_CHARACTERS.intersection(relative):
        return [relative] if os.path.lexists(context / relative) else []
    found = [""]
    for component in relative.split("/"):
        found = [path for base in found for path in _glob_component(context, base, component)]
    return found


def _glob_component(context: Path, base: str, component: str) -> list[str]:
    if not _GLOB_CHARACTERS.intersection(component):
        path = posixpath.join(base, component)
        return [path] if os.path.lexists(context / path) else []
    directory = context / base
    if directory.is_symlink() or not directory.is_dir():
        return []
    regex = _component_regex(component)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [posixpath.join(base, name) for name in names if regex.fullmatch(name)]


def _component_regex(component: str) -> re.Pattern[str]:
    """Go's filepath.Match syntax for one path component: ``*``, ``?``, ``[a-z]``,
    ``[^a-z]``, ``\\`` escapes. A malformed class matches itself literally."""
    expression = ""
    position = 0
    while position < len(component):
        char = component[position]
        position += 1
        if char == "*":
            expression += "[^/]*"
        elif char == "?":
            expression += "[^/]"
        elif char == "\\" and position < len(component):
            expression += re.escape(component[position])
            position += 1
        elif char == "[" and (end := _class_end(component, position)) > 0:
            expression += _character_class(component[position:end])
            position = end + 1
        else:
            expression += re.escape(char)
    return re.compile(expression, re.DOTALL)


def _class_end(component: str, start: int) -> int:
    """The index of the ``]`` closing a class that opens just before ``start``, or -1."""
    position = start + 1 if component.startswith("^", start) else start
    first = position
    while position < len(component):
        char = component[position]
        if char == "\\":
            position += 2
            continue
        if char == "]" and position > first:
            return position
        position += 1
    return -1


def _character_class(body: str) -> str:
    negated = body.startswith("^")
    if negated:
        body = body[1:]
    parts = []
    position = 0
    while position < len(body):
        char = body[position]
        position += 1
        if char == "\\" and position < len(body):
            char = body[position]
            position += 1
            parts.append(re.escape(char))
        elif char == "-":
            parts.append("-")
        else:
            parts.append(re.escape(char))
    return "[" + ("^" if negated else "") + "".join(parts) + "]"


def _files_under(context: Path, relative: str, ignore: DockerIgnore) -> Iterator[str]:
    """The path itself if a file or symlink, else every file below it; not the ignored."""
    full = context / relative
    if full.is_symlink() or not full.is_dir():
        if relative != "." and not ignore.ignores(relative):
            yield relative
        return
    if relative != "." and ignore.ignores(relative) and not ignore.has_exceptions:
        return
    yield from _walk(context, "" if relative == "." else relative, ignore)


def _walk(context: Path, directory: str, ignore: DockerIgnore) -> Iterator[str]:
    try:
        entries = sorted(os.scandir(context / directory), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        path = posixpath.join(directory, entry.name) if directory else entry.name
        if entry.is_dir(follow_symlinks=False):
            ignored = ignore.ignores(path)
            # Without "!" exceptions nothing below an ignored folder can come back.
            if ignored and not ignore.has_exceptions:
                continue
            if not ignored:
                yield path + "/"
            yield from _walk(context, path, ignore)
        elif _is_copyable(entry) and not ignore.ignores(path):
            yield path


def _is_copyable(entry: os.DirEntry[str]) -> bool:
    """A regular file or a symlink; sockets, fifos and devices never reach a build."""
    return entry.is_symlink() or entry.is_file(follow_symlinks=False)
