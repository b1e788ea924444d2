"""Files out of a built stage: ``--export STAGE:/path/in/image=HOST_DIR``.

The stage image gets a container that is created and never started; the path is
read from it through the Engine API and unpacked on the host with the same care
as any archive (nothing outside HOST_DIR, no device files), and the container is
removed whatever happens.
"""

from __future__ import annotations

import dataclasses
import io
import posixpath
import tarfile
from pathlib import Path

import docker.errors

from ci_integration.engine.images import Engine, stream_reader
from ci_integration.errors import EngineError, UsageError


@dataclasses.dataclass(frozen=True)
class Export:
    stage: str
    path: str
    destination: Path

    @classmethod
    def parse(cls, text: str, cwd: Path) -> Export:
        stage, colon, rest = text.partition(":")
        path, equals, destination = rest.partition("=")
        if not (stage and colon and equals and path.startswith("/") and destination):
            raise UsageError(f"bad --export {text!r}: write STAGE:/absolute/path/in/image=HOST_DIR")
        return cls(stage, posixpath.normpath(path), cwd / destination)


def export_path(engine: Engine, image: str, export: Export) -> int:
    """Copy ``export.path`` of ``image`` into ``export.destination``; returns files copied.

    A folder's content lands in the destination; a file lands in it by its name.
    """
    try:
        container = engine.api.create_container(image, command=["true"], labels={})
    except docker.errors.DockerException as exc:
        raise EngineError(f"cannot open {image} to export {export.path}: {exc}") from None
    try:
        try:
            chunks, stat = engine.api.get_archive(container["Id"], export.path)
        except docker.errors.NotFound:
            raise UsageError(
                f"--export {export.stage}:{export.path}: no such path in the stage"
            ) from None
        is_folder = bool(stat.get("mode", 0) & (1 << 31))
        export.destination.mkdir(parents=True, exist_ok=True)
        return _unpack(stream_reader(chunks), export.destination, strip_top=is_folder)
    finally:
        engine.api.remove_container(container["Id"], force=True)


def _unpack(stream: io.BufferedReader, destination: Path, *, strip_top: bool) -> int:
    count = 0
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if strip_top:
                # A folder's own name is dropped: its content goes into the destination.
                member.name = member.name.partition("/")[2]
                if member.islnk():
                    member.linkname = member.linkname.partition("/")[2]
                if not member.name:
                    continue
            archive.extract(member, destination, filter="data")
            count += member.isfile()
    return count
