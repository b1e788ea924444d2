"""The .dockerignore of a build context, matched as moby's patternmatcher matches it: which
context paths stay out of the build. Where the file is looked for follows BuildKit.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from pathlib import Path

from ci_integration.errors import UsageError

_EXACT, _PREFIX, _SUFFIX, _REGEX = "exact", "prefix", "suffix", "regex"
_REGEX_SPECIALS = frozenset(".+()|{}$")


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
