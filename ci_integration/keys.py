"""Cache keys: templates such as ``ccache-{os}-{hash:src/**/*.c,Makefile}`` rendered
to plain keys, and the checks every key passes before it reaches a store."""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from ci_integration.errors import UsageError

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 512
_KEY = re.compile(r"[A-Za-z0-9_.+=@:~,-][A-Za-z0-9_.+=@:~,/-]*")
_PLACEHOLDER = re.compile(r"\{([a-z]+)(?::([^}]*))?\}")
KEY_CHARACTERS = "letters, digits and . _ + = @ : ~ , - /"


def render(template: str, *, values: Mapping[str, str], cwd: Path) -> str:
    """The key with each placeholder replaced; a bad template raises UsageError.

    ``values`` names the plain placeholders (branch, scope, os...); ``{hash:GLOBS}``
    hashes the files matched by comma-separated globs below ``cwd``.
    """

    def substitute(match: re.Match[str]) -> str:
        name, argument = match.group(1), match.group(2)
        if name == "hash":
            if not argument:
                raise UsageError(
                    f"{{hash:...}} in key {template!r} needs globs, like {{hash:src/**}}"
                )
            return hash_files(argument.split(","), cwd)
        if argument is not None or name not in values:
            known = ", ".join(sorted(values)) + ", hash:GLOBS"
            raise UsageError(
                f"unknown placeholder {match.group(0)} in key {template!r}: use {known}"
            )
        return values[name]

    key = _PLACEHOLDER.sub(substitute, template)
    if "{" in key or "}" in key:
        raise UsageError(f"unbalanced braces in key {template!r}")
    return validate(key)


def validate(key: str) -> str:
    if not key:
        raise UsageError("the cache key is empty: pass --key NAME")
    if len(key) > MAX_KEY_LENGTH:
        raise UsageError(f"cache key of {len(key)} characters: at most {MAX_KEY_LENGTH} allowed")
    if not _KEY.fullmatch(key):
        raise UsageError(f"invalid cache key {key[:80]!r}: use {KEY_CHARACTERS}")
    return key


def literal_prefix(template: str) -> str:
    """The part of a template before its first placeholder: the natural restore key."""
    return template.split("{", 1)[0]


def placeholder_values(branch: str | None, scope: str) -> dict[str, str]:
    system = os.uname()
    machine = system.machine.lower() or "unknown"
    return {
        "branch": re.sub(r"[^A-Za-z0-9_.-]+", "-", branch or scope),
        "scope": scope,
        "os": f"{system.sysname.lower()}-{machine}",
        "arch": machine,
    }


def hash_files(patterns: list[str], cwd: Path) -> str:
    """A sha256 over the matched files' paths and contents, sorted; 16 hex digits."""
    matched: set[str] = set()
    for pattern in (p.strip() for p in patterns):
        if pattern:
            matched.update(glob.glob(pattern, root_dir=cwd, recursive=True))
    files = sorted(path for path in matched if (cwd / path).is_file())
    if not files:
        log.warning("no file matches %s: the hash is that of nothing", ",".join(patterns))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.encode() + b"\0")
        content = hashlib.sha256()
        with open(cwd / path, "rb") as stream:
            while block := stream.read(1024 * 1024):
                content.update(block)
        digest.update(content.digest())
    return digest.hexdigest()[:16]
