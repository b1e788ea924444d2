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
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from ci_integration.images.context_files import select_files
from ci_integration.images.dockerfile import Dockerfile, Stage
from ci_integration.images.dockerignore import DockerIgnore

KEY_FORMAT = 2  # bump when what a key covers changes, so old keys stop matching
NO_IMAGE_IDS: Mapping[str, str] = MappingProxyType({})


def hash_sources(context: Path, sources: Sequence[str], ignore: DockerIgnore) -> str:
    """sha256 hex over the files the COPY/ADD sources select: path, permissions and
    content of each (a symlink: its target; a folder: its permissions), sorted by
    path; ignored files left out. BuildKit's cache matches a COPY on no less.
    A source selecting nothing counts as ``missing:SOURCE``, so its appearing changes it."""
    entries: dict[str, str] = {}
    missing: set[str] = set()
    for source in sources:
        selected = False
        for path in select_files(context, source, ignore):
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


def _describe(context: Path, relative: str) -> str:
    """What of one file the key covers: a symlink's target, a folder's permissions,
    else a file's permissions and content hash."""
    full = context / relative
    try:
        mode = full.lstat().st_mode
        if stat.S_ISLNK(mode):
            return "link\0" + os.readlink(full)
        if stat.S_ISDIR(mode):
            return f"dir\0{stat.S_IMODE(mode):o}"
        return f"file\0{stat.S_IMODE(mode):o}\0{_content_hash(full)}"
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
