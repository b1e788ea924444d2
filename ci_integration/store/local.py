"""The local folder store, the embedded default (``file://DIR``).

Layout::

    DIR/blobs/ab/abcdef...     one file a blob, named by its sha256
    DIR/entries/SCOPE/KEY.json one file an entry (the key percent-encoded)
    DIR/tmp/                   writes in progress, renamed into place when whole
    DIR/lock                   flock: shared for saves and restores, exclusive for prune

Every write goes to tmp/ first and is renamed into place, so a process killed at
any moment leaves at most a temp file, which ``sweep`` removes later.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ci_integration.process import pid_alive
from ci_integration.store.base import LOCAL_COMPRESSION_LEVEL, BlobInfo, BlobNotFound, EntryInfo

# A temp file this old belongs to a writer that is gone, wherever it ran.
STALE_TEMP_SECONDS = 3600
_HOST = os.uname().nodename
log = logging.getLogger(__name__)


class LocalStore:
    # Saves hold the lock shared while prune holds it exclusive: no grace needed.
    blob_grace_seconds = 0.0
    compression_level = LOCAL_COMPRESSION_LEVEL

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.entries = root / "entries"
        self.tmp = root / "tmp"
        for folder in (self.blobs, self.entries, self.tmp):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                if not folder.is_dir():
                    raise
                # A store mounted read-only: restores read it, saves will say why not.

    @property
    def description(self) -> str:
        return f"file://{self.root}"

    # Blobs

    def _blob_path(self, digest: str) -> Path:
        hexdigest = digest.removeprefix("sha256:")
        return self.blobs / hexdigest[:2] / hexdigest

    def has_blob(self, digest: str) -> bool:
        path = self._blob_path(digest)
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        except OSError:  # read-only: its time of use is not recorded
            return path.exists()
        return True

    def put_blob(self, digest: str, data: bytes) -> None:
        self._write_atomically(self._blob_path(digest), data)

    def get_blob(self, digest: str) -> bytes:
        """The blob's bytes; dropped from the page cache after, if this read brought
        them in (see _read_once)."""
        try:
            return _read_once(self._blob_path(digest))
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    def delete_blob(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._blob_path(digest).unlink()

    def list_blobs(self) -> Iterator[BlobInfo]:
        for shard in _scandir(self.blobs):
            for item in _scandir(shard.path):
                with contextlib.suppress(FileNotFoundError):
                    stat = item.stat()
                    yield BlobInfo("sha256:" + item.name, stat.st_size, stat.st_mtime)

    # Entries

    def _entry_path(self, scope: str, key: str) -> Path:
        return self.entries / scope / (urllib.parse.quote(key, safe="") + ".json")

    def put_entry(self, scope: str, key: str, manifest: bytes) -> None:
        self._write_atomically(self._entry_path(scope, key), manifest)

    def get_entry(self, scope: str, key: str) -> bytes | None:
        try:
            return _read_keeping_atime(self._entry_path(scope, key))
        except FileNotFoundError:
            return None

    def touch_entry(self, scope: str, key: str) -> None:
        path = self._entry_path(scope, key)
        # A store mounted read-only keeps no record of use (OSError: EROFS, EACCES).
        with contextlib.suppress(OSError):
            # atime records the last use; mtime stays the creation time.
            os.utime(path, (time.time(), path.stat().st_mtime))

    def delete_entry(self, scope: str, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._entry_path(scope, key).unlink()

    def list_entries(self, scope: str | None = None) -> list[EntryInfo]:
        scopes = [self.entries / scope] if scope else [Path(d.path) for d in _scandir(self.entries)]
        found = []
        for folder in scopes:
            for item in _scandir(folder):
                if not item.name.endswith(".json"):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    stat = item.stat()
                    key = urllib.parse.unquote(item.name[: -len(".json")])
                    found.append(
                        EntryInfo(folder.name, key, stat.st_mtime, stat.st_atime, stat.st_size)
                    )
        return found

    # Concurrency and leftovers

    @contextlib.contextmanager
    def lock(self, *, exclusive: bool) -> Iterator[None]:
        with self._lock_file(exclusive) as handle:
            if handle is None:
                yield
                return
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _lock_file(self, exclusive: bool) -> Iterator[BinaryIO | None]:
        """The lock file, made if need be. A reader of a store it cannot write (mounted
        read-only, another user's) opens it for reading, which flock allows, or goes
        without when there is none: then nobody can have written since it was mounted."""
        path = self.root / "lock"
        try:
            handle: BinaryIO = open(path, "a+b")  # noqa: SIM115 (closed below)
        except OSError:
            if exclusive:
                raise
            try:
                handle = open(path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                log.debug("%s has no lock file and is read-only: reading it unlocked", self.root)
                yield None
                return
        with handle:
            yield handle

    def sweep(self) -> int:
        removed = 0
        now = time.time()
        for item in _scandir(self.tmp):
            host, _, rest = item.name.rpartition("~")
            pid = rest.split(".", 1)[0]
            with contextlib.suppress(FileNotFoundError, ValueError):
                stale = now - item.stat().st_mtime > STALE_TEMP_SECONDS
                writer_gone = host == _HOST and not pid_alive(int(pid))
                if stale or writer_gone:
                    os.unlink(item.path)
                    removed += 1
        return removed

    def _write_atomically(self, path: Path, data: bytes) -> None:
        temp = self.tmp / f"{_HOST}~{os.getpid()}.{os.urandom(6).hex()}"
        try:
            with open(temp, "wb") as stream:
                stream.write(data)
            try:
                os.replace(temp, path)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise


def _read_once(path: Path) -> bytes:
    """The file's bytes; if reading them brought them into the page cache, they are
    handed back to the kernel after.

    A restore reads each blob once and then writes as many bytes again as new files.
    Kept cached, the blobs would hold memory those files need, and the kernel would
    take fresh pages for the files. Handed back, the same pages hold them. On a VM
    that returns free memory to its host (virtio-balloon free page reporting, as on
    these CI machines), a fresh page costs a fault in the host too. A blob that was
    already cached (just saved, or being read by another job) stays cached.
    """
    with open(path, "rb") as file:
        brought_in = not _first_page_cached(file.fileno())
        data = file.read()
        if brought_in:
            with contextlib.suppress(OSError):  # only a hint
                os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return data


def _first_page_cached(fd: int) -> bool:
    """Whether the file's first byte is in the page cache: a read that may not wait
    for the disk (RWF_NOWAIT) gets it only from there."""
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
    except OSError:  # EAGAIN: on disk only; EOPNOTSUPP: an old kernel, say no
        return False
    return True


def _read_keeping_atime(path: Path) -> bytes:
    """Read without the kernel moving atime: atime is the entry's last-use mark,
    and a listing or a prune reading it is no use."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOATIME | os.O_CLOEXEC)
    except PermissionError:  # O_NOATIME is only for the file's owner
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as stream:
        return stream.read()


def _scandir(path: str | Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(path))
    except FileNotFoundError:
        return []
