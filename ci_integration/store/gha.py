"""The GitHub Actions cache store (``gha://``): blobs and entries as cache entries of
the job's repository, through whichever protocol the job's cache service speaks
(gha_service: v2 on github.com, v1 on GitHub Enterprise Server and act). Cache keys,
all of one version of our own::

    ci-integration-blob-HEX                  a blob, shared by every key and scope
    ci-integration-blob-HEX-STAMP            the same blob, stored while HEX was held
    ci-integration-entry:SCOPE:KEY:STAMP     an entry; SCOPE and KEY percent-encoded

The service never overwrites a key, so every save of an entry is a new cache entry
(STAMP: time and a random part), and the entry of (SCOPE, KEY) is the newest whose
cache key starts with ``...:SCOPE:KEY:``; a restore-key prefix is a lookup of
``...:SCOPE:PREFIX``, which the service answers with its newest match. The encoding
keeps only ``a-z 0-9 . _ -`` (servers lower-case keys; act does), so it keeps
prefixes and the separators never occur inside a part.

GitHub scopes its cache by branch on top of ours: a job reads what its own branch,
the pull request's base and the default branch wrote, as our scope chain does. The
service can neither list nor delete: ``list_entries`` and prune find nothing (and
say so), and GitHub itself evicts entries unused for 7 days and the oldest beyond
10 GB a repository. A blob evicted under an entry is a miss with a warning, and the
next save stores it anew. A save that would upload more than that quota stops (a
warning): it would evict every other entry of the repository to make room.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping

from ci_integration.store.base import BlobInfo, BlobNotFound, EntryInfo, no_lock
from ci_integration.store.gha_service import Conflict, Found, connect

log = logging.getLogger(__name__)

# Ours alone: never a version actions/cache computes, so neither reads the other's.
VERSION = hashlib.sha256(b"ci-integration|store|1").hexdigest()
BLOB = "ci-integration-blob-"
ENTRY = "ci-integration-entry:"
MAX_KEY_LENGTH = 512  # the service's limit
REPOSITORY_QUOTA_BYTES = 10 * 1000**3  # GitHub keeps 10 GB of cache a repository
_KEPT = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._-")


def encode(text: str) -> str:
    """Lower case, no separator, and a prefix of the text encodes to a prefix."""
    return "".join(chr(byte) if byte in _KEPT else f"%{byte:02x}" for byte in text.encode())


def _stamp() -> str:
    return f"{time.time_ns() // 1_000_000:x}-{os.urandom(3).hex()}"


class GhaStore:
    blob_grace_seconds = 0.0  # nothing is ever deleted through the service

    def __init__(self, env: Mapping[str, str], *, sleep: Callable[[float], None] | None = None):
        # A missing token fails each request with a warning, not the job: cache
        # trouble never stops a build.
        self.service = connect(env, sleep=sleep)
        self._told_unlistable = False
        self._uploaded = 0  # by this command, which uploads from several threads
        self._uploaded_lock = threading.Lock()

    @property
    def description(self) -> str:
        return f"gha:// (GitHub Actions cache {self.service.protocol} at {self.service.host})"

    # Blobs

    def has_blob(self, digest: str) -> bool:
        return self._find_blob(digest) is not None

    def put_blob(self, digest: str, data: bytes) -> None:
        with self._uploaded_lock:
            if self._uploaded + len(data) > REPOSITORY_QUOTA_BYTES:
                raise OSError(
                    f"this save would upload over the {REPOSITORY_QUOTA_BYTES / 1000**3:g} GB "
                    "GitHub keeps for a repository's cache, evicting every other entry: not "
                    "saved (cache less, or use an s3:// or oci:// store)"
                )
            self._uploaded += len(data)
        name = BLOB + digest.removeprefix("sha256:")
        try:
            self._store(name, data)
        except Conflict:
            # Stored already, or held by an upload under way or abandoned: an
            # abandoned reservation must not keep the blob out of the cache.
            if not self.has_blob(digest):
                self._store(f"{name}-{_stamp()}", data)

    def get_blob(self, digest: str) -> bytes:
        found = self._find_blob(digest)
        if found is None:
            raise BlobNotFound(digest)
        return self.service.download(found)

    def delete_blob(self, digest: str) -> None:
        """The service cannot delete: GitHub evicts by itself."""

    def list_blobs(self) -> Iterator[BlobInfo]:
        return iter(())

    def _find_blob(self, digest: str) -> Found | None:
        name = BLOB + digest.removeprefix("sha256:")
        found = self.service.lookup(name, VERSION)
        if found is None or not found.key.lower().startswith(name):
            return None
        return found

    # Entries

    def put_entry(self, scope: str, key: str, manifest: bytes) -> None:
        try:
            self._store(f"{_entry_prefix(scope, key)}:{_stamp()}", manifest)
        except Conflict:  # a reservation of ours whose answer was lost, retried
            self._store(f"{_entry_prefix(scope, key)}:{_stamp()}", manifest)

    def get_entry(self, scope: str, key: str) -> bytes | None:
        prefix = _entry_prefix(scope, key) + ":"
        if len(prefix) > MAX_KEY_LENGTH:
            return None
        found = self.service.lookup(prefix, VERSION)
        if found is None or not found.key.lower().startswith(prefix):
            return None
        return self.service.download(found)

    def newest_entry(self, scope: str, prefix: str) -> str | None:
        """The key of the newest entry of ``scope`` starting with ``prefix``: the
        service's own prefix lookup, as its protocols cannot list."""
        wanted = _entry_prefix(scope, prefix)
        if len(wanted) > MAX_KEY_LENGTH:
            return None
        found = self.service.lookup(wanted, VERSION)
        head = f"{ENTRY}{encode(scope)}:"
        if found is None or not found.key.lower().startswith(wanted):
            return None
        encoded_key = found.key.lower()[len(head) :].rpartition(":")[0]
        key = urllib.parse.unquote(encoded_key)
        return key if key.startswith(prefix) and encode(key) == encoded_key else None

    def touch_entry(self, scope: str, key: str) -> None:
        """GitHub records a use when the entry is downloaded."""

    def delete_entry(self, scope: str, key: str) -> None:
        """The service cannot delete: GitHub evicts by itself."""

    def list_entries(self, scope: str | None = None) -> list[EntryInfo]:
        if not self._told_unlistable:
            self._told_unlistable = True
            log.warning(
                "the GitHub Actions cache service can neither list nor delete entries: "
                "nothing listed, nothing pruned. GitHub evicts entries unused for 7 days and "
                "the oldest beyond 10 GB a repository; see them in the repository's Actions "
                "> Caches page"
            )
        return []

    # Concurrency and leftovers

    def lock(self, *, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return no_lock()

    def sweep(self) -> int:
        return 0

    def _store(self, name: str, data: bytes) -> None:
        if len(name) > MAX_KEY_LENGTH:
            raise OSError(
                f"the cache key is {len(name)} characters once encoded, over the GitHub "
                f"cache's {MAX_KEY_LENGTH}: use a shorter key"
            )
        self.service.store(name, VERSION, data)


def _entry_prefix(scope: str, key: str) -> str:
    return f"{ENTRY}{encode(scope)}:{encode(key)}"
