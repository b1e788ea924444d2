"""What a stage's cache key covers: its text, the build args, the build-context files it
copies or bind-mounts (less those .dockerignore leaves out), and the keys of the stages
and the ids of the images it builds on.

Keys are sha256 over plain data (relative paths, sorted), so the same inputs give the
same key in any process on any machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from ci_integration.errors import UsageError
from ci_integration.images.dockerfile import Dockerfile, Stage

KEY_FORMAT = 1  # bump when what a key covers changes, so old keys stop matching
NO_IMAGE_IDS: Mapping[str, str] = MappingProxyType({})
_EXACT, _PREFIX, _SUFFIX, _REGEX = "exact", "prefix", "suffix", "regex"
_REGEX_SPECIALS = frozenset(".+()|{}$")
_GLOB_CHARACTERS = frozenset("*?[\\")


class _Pattern:
    """One .dockerignore line, matched as moby's patternmatcher does."""

    def __init__(self, text: str) -> None:
        self.exception = text.startswith("!")
        self.text = text[1:] if self.exception else text
        self.kind, expression = _translate(self.text)
        try:
            self.regex = re.compile(expression)
        except re.error as exc:
            raise UsageError(f".dockerignore pattern {text!r} is malformed: {exc}") from None

    def matches(self, path: str) -> bool:
        if self.kind == _EXACT:
            return path == self.text
        if self.kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind == _SUFFIX:
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        return self.regex.fullmatch(path) is not None


def _translate(pattern: str) -> tuple[str, str]:
    """The pattern's match kind and its regular expression (moby's Pattern.compile)."""
    expression = ""
    kind = _EXACT
    position = 0
    first = True
    while position < len(pattern):
        char = pattern[position]
        position += 1
        if char == "*" and pattern.startswith("*", position):
            position += 1
            if pattern.startswith("/", position):
                position += 1
            if position == len(pattern):
                if kind == _EXACT:
                    kind = _PREFIX
                else:
                    expression += ".*"
                    kind = _REGEX
            else:
                expression += "(.*/)?"
                kind = _REGEX
            if first:
                kind = _SUFFIX
        elif char == "*":
            expression += "[^/]*"
            kind = _REGEX
        elif char == "?":
            expression += "[^/]"
            kind = _REGEX
        elif char in _REGEX_SPECIALS:
            expression += "\\" + char
        elif char == "\\":
            if position == len(pattern):
                expression += "\\"  # a dangling escape: compiling reports the bad pattern
            else:
                expression += re.escape(pattern[position])
                position += 1
                kind = _REGEX
        elif char in "[]":
            expression += char
            kind = _REGEX
        else:
            expression += char
        first = False
    return kind, expression


def _clean_pattern(line: str) -> str | None:
    """A .dockerignore line as moby's ignorefile.ReadAll leaves it; None for none."""
    if line.startswith("#"):
        return None
    pattern = line.strip()
    if not pattern:
        return None
    exception = pattern.startswith("!")
    if exception:
        pattern = pattern[1:].strip()
    if pattern:
        pattern = _clean_path(pattern)
        if len(pattern) > 1 and pattern.startswith("/"):
            pattern = pattern[1:]
    if exception and not pattern:
        raise UsageError('.dockerignore has a lone "!": write !PATTERN to keep files')
    return "!" + pattern if exception else pattern


def _clean_path(path: str) -> str:
    """Go's filepath.Clean: POSIX normpath, but never two leading slashes."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


class DockerIgnore:
    def __init__(self, lines: Sequence[str] = ()) -> None:
        """The patterns of a .dockerignore, given as the file's lines."""
        cleaned = (_clean_pattern(line) for line in lines)
        self.patterns = [_Pattern(text) for text in cleaned if text is not None]
        self.has_exceptions = any(pattern.exception for pattern in self.patterns)

    @classmethod
    def load(cls, context: Path, dockerfile: Path | None = None) -> DockerIgnore:
        """``<Dockerfile>.dockerignore`` beside the Dockerfile (BuildKit's rule), else the
        context's ``.dockerignore``, else nothing ignored."""
        candidates = [context / ".dockerignore"]
        if dockerfile is not None:
            candidates.insert(0, dockerfile.with_name(dockerfile.name + ".dockerignore"))
        for candidate in candidates:
            if candidate.is_file():
                return cls(_read_ignore_file(candidate).split("\n"))
        return cls()

    def ignores(self, relative_path: str) -> bool:
        """Whether the path (relative to the context, "/"-separated) stays out of the build."""
        path = _clean_path(relative_path).lstrip("/")
        if path in ("", "."):
            return False
        parents = _parents(path)
        matched = False
        for pattern in self.patterns:
            # Only an exception can undo a match, only an inclusion can make one.
            if pattern.exception != matched:
                continue
            if pattern.matches(path) or any(pattern.matches(parent) for parent in parents):
                matched = not pattern.exception
        return matched


def _read_ignore_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _parents(path: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: count + 1]) for count in range(len(parts))]


def hash_sources(context: Path, sources: Sequence[str], ignore: DockerIgnore) -> str:
    """sha256 hex over the files the COPY/ADD sources select: path, executable bit and
    content of each (a symlink: its target), sorted by path; ignored files left out.
    A source selecting nothing counts as ``missing:SOURCE``, so its appearing changes it."""
    entries: dict[str, str] = {}
    missing: set[str] = set()
    for source in sources:
        selected = False
        for path in _select(context, source, ignore):
            selected = True
            if path not in entries:
                entries[path] = _describe(context, path)
        if not selected:
            missing.add(source)
    digest = hashlib.sha256()
    for path in sorted(entries):
        digest.update(_encode(path) + b"\0" + _encode(entries[path]) + b"\n")
    for source in sorted(missing):
        digest.update(b"missing:" + _encode(source) + b"\n")
    return digest.hexdigest()


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _select(context: Path, source: str, ignore: DockerIgnore) -> Iterator[str]:
    """The files (and symlinks) below the context that one source copies."""
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
            # Without "!" exceptions nothing below an ignored folder can come back.
            if ignore.ignores(path) and not ignore.has_exceptions:
                continue
            yield from _walk(context, path, ignore)
        elif _is_copyable(entry) and not ignore.ignores(path):
            yield path


def _is_copyable(entry: os.DirEntry[str]) -> bool:
    """A regular file or a symlink; sockets, fifos and devices never reach a build."""
    return entry.is_symlink() or entry.is_file(follow_symlinks=False)


def _describe(context: Path, relative: str) -> str:
    """What of one file the key covers: a symlink's target, else exec bit and content hash."""
    full = context / relative
    try:
        mode = full.lstat().st_mode
        if stat.S_ISLNK(mode):
            return "link\0" + os.readlink(full)
        executable = "x" if mode & 0o111 else "-"
        return f"file\0{executable}\0{_content_hash(full)}"
    except OSError as exc:
        # The build will fail on it too; a key that says so is enough here.
        return f"unreadable\0{exc.errno}"


def _content_hash(path: Path) -> str:
    content = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1024 * 1024):
            content.update(block)
    return content.hexdigest()


def stage_keys(
    dockerfile: Dockerfile,
    stages: Sequence[Stage],
    context: Path,
    build_args: Mapping[str, str],
    ignore: DockerIgnore,
    base_image_ids: Mapping[str, str] = NO_IMAGE_IDS,
) -> dict[str, str]:
    """Each stage's cache key (64 hex digits); a stage's key covers its dependencies' keys,
    so a change anywhere upstream changes every stage below it."""
    keys: dict[str, str] = {}
    for stage in _with_dependencies(dockerfile, stages):
        keys[stage.ref] = _stage_key(
            dockerfile, stage, keys, context, build_args, ignore, base_image_ids
        )
    return {stage.ref: keys[stage.ref] for stage in stages}


def _with_dependencies(dockerfile: Dockerfile, stages: Sequence[Stage]) -> list[Stage]:
    needed = {needed.index for stage in stages for needed in dockerfile.stages_for(stage.ref)}
    return [dockerfile.stages[index] for index in sorted(needed)]


def _stage_key(
    dockerfile: Dockerfile,
    stage: Stage,
    keys: Mapping[str, str],
    context: Path,
    build_args: Mapping[str, str],
    ignore: DockerIgnore,
    base_image_ids: Mapping[str, str],
) -> str:
    document = {
        "format": KEY_FORMAT,
        "syntax": dockerfile.syntax,
        "escape": dockerfile.escape,
        "text": stage.text,
        "build_args": sorted(build_args.items()),
        "global_args": sorted(dockerfile.global_args.items()),
        "sources": hash_sources(context, stage.copy_sources, ignore),
        "mounted": hash_sources(context, stage.mount_sources, ignore),
        "stages": [[ref, keys[ref]] for ref in stage.depends_on],
        "images": [[image, base_image_ids.get(image)] for image in stage.external_images],
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(encoded.encode()).hexdigest()
