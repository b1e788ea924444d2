"""The Store protocol: what every backend (local folder, S3, registry...) provides.

A backend knows two things. Blobs: immutable bytes named by the sha256 of their
content, written at most once. Entries: small JSON manifests stored under
(scope, key), each written whole and atomically, after the blobs it names.
Everything above the backend (scope fallback, integrity checks, packing) is
shared code in this package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
# The zstd levels of packs. Saving into a folder on this machine, a save waits on
# the CPU: level 1 compresses about a fifth faster than level 2 (bench/
# cache_directory.py), for 8 to 13 % more bytes. Bytes that cross a network, and
# count against a quota, are worth the CPU that makes them fewer.
LOCAL_COMPRESSION_LEVEL = 1
REMOTE_COMPRESSION_LEVEL = 2


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True)
class EntryInfo:
    scope: str
    key: str
    created: float
    last_used: float
    size: int


@dataclasses.dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int
    modified: float


class BlobNotFound(Exception):
    """The backend has no blob with that digest."""


class Store(Protocol):
    """A backend. Methods raise OSError (or a backend's own error, wrapped as
    CacheError by the caller) when the store cannot be reached."""

    @property
    def description(self) -> str:
        """Where the store is, for log lines: never with credentials in it."""

    # How long a blob no entry references is kept, because a save still running
    # may be about to write the entry that names it. 0 where ``lock`` really locks.
    blob_grace_seconds: float
    # The zstd level of the packs saved here: LOCAL_ or REMOTE_COMPRESSION_LEVEL.
    compression_level: int

    def has_blob(self, digest: str) -> bool:
        """Whether the blob exists; refreshes its age so a prune spares it."""

    def put_blob(self, digest: str, data: bytes) -> None:
        """Store ``data`` under ``digest`` (already computed by the caller)."""

    def get_blob(self, digest: str) -> bytes:
        """The blob's bytes, unverified; BlobNotFound if it is not there."""

    def delete_blob(self, digest: str) -> None: ...

    def list_blobs(self) -> Iterator[BlobInfo]: ...

    def put_entry(self, scope: str, key: str, manifest: bytes) -> None:
        """Write the entry whole: a reader sees the old manifest or the new one."""

    def get_entry(self, scope: str, key: str) -> bytes | None: ...

    def touch_entry(self, scope: str, key: str) -> None:
        """Mark the entry used now (least-recently-used eviction)."""

    def delete_entry(self, scope: str, key: str) -> None: ...

    def list_entries(self, scope: str | None = None) -> list[EntryInfo]:
        """Entries of one scope, or of every scope."""

    def lock(self, *, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        """Saves and restores hold it shared, a prune exclusive (a no-op where the
        backend has no locks and relies on grace periods instead)."""

    def sweep(self) -> int:
        """Remove leftovers of interrupted writes; returns how many."""


# What a backend that cannot list its entries, or only at a cost, answers instead.
# Each is a capability of its own, not a method of Store: listing gives every
# candidate, newest first, where a lookup gives only the newest, so a backend that
# lists must not be made to answer these.


@runtime_checkable
class FindsNewestEntry(Protocol):
    def newest_entry(self, scope: str, prefix: str) -> str | None:
        """The newest key of ``scope`` that starts with ``prefix`` (the GitHub cache's
        restore keys, the builds of a Jenkins job)."""


@runtime_checkable
class FindsNewestOfFamily(Protocol):
    def newest_of_family(self, scope: str, family: str) -> bytes | None:
        """The manifest of the newest entry of ``scope`` holding the same paths,
        whatever its key (see manifest.family_of)."""


@runtime_checkable
class KeptAsBuildArtifacts(Protocol):
    def artifacts(self) -> dict[str, str]:
        """What the build archives to keep what a save wrote (the jenkins:// folder):
        archiveArtifacts' ``artifacts`` and ``excludes``, from the workspace."""


@contextlib.contextmanager
def no_lock() -> Iterator[None]:
    yield


def keys_by_prefix(store: Store, scope: str, prefix: str) -> list[str]:
    """Keys of ``scope`` that start with ``prefix``, newest first; only the newest
    where the backend finds it itself."""
    if isinstance(store, FindsNewestEntry):
        key = store.newest_entry(scope, prefix)
        return [] if key is None else [key]
    matches = [entry for entry in store.list_entries(scope) if entry.key.startswith(prefix)]
    return [entry.key for entry in sorted(matches, key=lambda e: e.created, reverse=True)]
