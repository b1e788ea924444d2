"""Where a blob lives in the GitHub cache: a range of a bundle, one cache entry holding
every blob a save added. The blobs of a save gather in a spool (a temp file, never
all in memory) until the entry that names them is committed; the spool then goes up
as one cache entry, whatever the number of blobs.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading

from ci_integration.errors import CorruptDataError


@dataclasses.dataclass(frozen=True)
class Location:
    bundle: str  # the cache key of the bundle
    offset: int
    size: int

    def to_json(self) -> list[str | int]:
        return [self.bundle, self.offset, self.size]

    @classmethod
    def from_json(cls, value: object, prefix: str) -> Location:
        """A location read from an entry: anything odd is corrupt data."""
        if not (isinstance(value, list) and len(value) == 3):
            raise CorruptDataError("an entry gives a malformed blob location")
        bundle, offset, size = value
        if not (
            isinstance(bundle, str)
            and bundle.startswith(prefix)
            and len(bundle) <= 512
            and isinstance(offset, int)
            and isinstance(size, int)
            and offset >= 0
            and size >= 0
        ):
            raise CorruptDataError("an entry gives a malformed blob location")
        return cls(bundle, offset, size)


class Spool:
    """Blobs appended to a temp file, read back by range: the payload of an upload.
    Thread-safe: a save's packer adds blobs from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._descriptor: int | None = None
        self.blobs: dict[str, tuple[int, int]] = {}  # digest -> (offset, size)
        self.size = 0

    def __contains__(self, digest: str) -> bool:
        return digest in self.blobs

    def add(self, digest: str, data: bytes) -> None:
        with self._lock:
            if digest in self.blobs:
                return
            if self._descriptor is None:
                descriptor, path = tempfile.mkstemp(prefix="ci-integration-bundle-")
                os.unlink(path)  # gone with the last descriptor, also if we are killed
                self._descriptor = descriptor
            view = memoryview(data)
            while view:
                written = os.pwrite(self._descriptor, view, self.size + len(data) - len(view))
                view = view[written:]
            self.blobs[digest] = (self.size, len(data))
            self.size += len(data)

    def read(self, offset: int, length: int) -> bytes:
        assert self._descriptor is not None
        parts = []
        while length:
            part = os.pread(self._descriptor, length, offset)
            if not part:
                raise OSError("the bundle's temp file is shorter than what was written")
            parts.append(part)
            offset, length = offset + len(part), length - len(part)
        return b"".join(parts)

    def blob(self, digest: str) -> bytes:
        offset, size = self.blobs[digest]
        return self.read(offset, size)

    def close(self) -> None:
        with self._lock:
            if self._descriptor is not None:
                os.close(self._descriptor)
                self._descriptor = None
