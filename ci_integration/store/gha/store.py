"""The GitHub Actions cache store (``gha://``): entries and their blobs as cache entries
of the job's repository, through whichever protocol the job's cache service speaks
(service.py: v2 on github.com, v1 on GitHub Enterprise Server and act).

GitHub counts cache entries: 200 new ones a minute a repository, and a lookup per
request. So a save makes a bounded number of them, whatever its size:

    ci-integration-bundle-STAMP                every blob the save added, end to end
    ci-integration-entry:SCOPE:KEY:STAMP       the entry: its manifest, and where each
                                               of its blobs lives (bundle, offset, size)
    ci-integration-family:SCOPE:FAMILY:KEY:STAMP  the same, found by the paths it
                                               holds (a save under any key finds it)

SCOPE and KEY percent-encoded, STAMP a time and a random part. A blob is read with a
ranged GET of its bundle; a restore makes one lookup for the entry and one for each
bundle it names. The entry of a save names at most MAX_BUNDLES bundles: when more
would be needed, the blobs of the smallest ones are copied into the new bundle, so
restores stay at a few lookups over any number of generations.

The service never overwrites a key, so every save of an entry is a new cache entry,
and the entry of (SCOPE, KEY) is the newest whose cache key starts with
``...:SCOPE:KEY:``; a restore-key prefix is a lookup of ``...:SCOPE:PREFIX``, which
the service answers with its newest match. The encoding keeps only ``a-z 0-9 . _ -``
(servers lower-case keys; act does), so it keeps prefixes and the separators never
occur inside a part.

Blobs are known to this store only through the entries it read or wrote: a save
that references an earlier entry's pieces has read that entry (dircache does), so it
knows where they are. GitHub scopes its cache by branch on top of ours: a job reads
what its own branch, the pull request's base and the default branch wrote, as our
scope chain does. Listing and deleting go through GitHub's REST API (rest.py) when
the job has a token for it; GitHub itself evicts entries unused for 7 days and the
oldest beyond 10 GB a repository. A bundle evicted under an entry is a miss with a
warning, and the next save stores its blobs anew.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping

from ci_integration.errors import CorruptDataError
from ci_integration.store.base import (
    REMOTE_COMPRESSION_LEVEL,
    BlobInfo,
    BlobNotFound,
    EntryInfo,
    no_lock,
)
from ci_integration.store.gha.bundle import Location, Spool
from ci_integration.store.gha.rest import CacheRow, CachesApi
from ci_integration.store.gha.service import Conflict, Found, InMemory, Payload, connect
from ci_integration.store.manifest import Manifest

log = logging.getLogger(__name__)

# Ours alone: never a version actions/cache computes, so neither reads the other's.
VERSION = hashlib.sha256(b"ci-integration|store|2").hexdigest()
BUNDLE = "ci-integration-bundle-"
ENTRY = "ci-integration-entry:"
FAMILY = "ci-integration-family:"
ENTRY_FORMAT = "ci-integration-gha-entry/1"
MAX_KEY_LENGTH = 512  # the service's limit
MAX_BUNDLES = 2  # an entry's blobs live in at most this many bundles
REPOSITORY_QUOTA_BYTES = 10 * 1000**3  # GitHub keeps 10 GB of cache a repository
MAX_ENTRY_DOCUMENT_BYTES = 64 * 1024 * 1024
# A bundle no entry names is kept this long: a save uploads it before its entry.
BUNDLE_GRACE_SECONDS = 3600.0
_KEPT = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._-")


def encode(text: str) -> str:
    """Lower case, no separator, and a prefix of the text encodes to a prefix."""
    return "".join(chr(byte) if byte in _KEPT else f"%{byte:02x}" for byte in text.encode())


def _stamp() -> str:
    return f"{time.time_ns() // 1_000_000:x}-{os.urandom(3).hex()}"


class GhaStore:
    blob_grace_seconds = 0.0  # a bundle is only written with the entry that names it
    compression_level = REMOTE_COMPRESSION_LEVEL

    def __init__(self, env: Mapping[str, str], *, sleep: Callable[[float], None] | None = None):
        # A missing token fails each request with a warning, not the job: cache
        # trouble never stops a build.
        self.service = connect(env, sleep=sleep)
        self.api = CachesApi(env, sleep=sleep)
        self._told_unlistable = False
        self._rows: list[CacheRow] | None = None  # the REST listing, once a command
        self._entry_bundles: dict[tuple[str, str], set[str]] = {}  # entries read -> bundles
        self._deleted: set[tuple[str, str]] = set()  # entries this command deleted
        self._spool = Spool()
        self._located: dict[str, Location] = {}  # every blob this command knows of
        self._bundles: dict[str, Found | None] = {}  # bundle name -> its lookup
        self._lock = threading.Lock()  # one commit at a time; guards the maps
        self._uploaded = 0  # bytes this command sent, against the quota
        self.entries_created = 0  # cache entries this command made (bench, tests)

    @property
    def description(self) -> str:
        return f"gha:// (GitHub Actions cache {self.service.protocol} at {self.service.host})"

    # Blobs

    def has_blob(self, digest: str) -> bool:
        """Whether an entry this command read or wrote holds the blob (or a commit to
        come will): asking the service blob by blob is what GitHub's limits forbid."""
        with self._lock:
            if digest in self._spool:
                return True
            where = self._located.get(digest)
        # Once a bundle: GitHub may have evicted it since the entry was written.
        return where is not None and self._bundle(where.bundle) is not None

    def put_blob(self, digest: str, data: bytes) -> None:
        """Spooled: the blob goes up in the bundle of the entry that names it."""
        self._spool.add(digest, data)

    def get_blob(self, digest: str) -> bytes:
        with self._lock:
            if digest in self._spool:
                return self._spool.blob(digest)
            where = self._located.get(digest)
        if where is None:
            raise BlobNotFound(digest)
        found = self._bundle(where.bundle)
        if found is None:
            raise BlobNotFound(digest)
        return self.service.download(found, where.offset, where.size)

    def delete_blob(self, digest: str) -> None:
        """A blob is a range of a bundle: it goes when its bundle does (prune)."""

    def list_blobs(self) -> Iterator[BlobInfo]:
        return iter(())

    def _bundle(self, name: str) -> Found | None:
        """The bundle's lookup, once a command (a lookup counts against the limits)."""
        if name not in self._bundles:
            found = self.service.lookup(name, VERSION)
            if found is not None and found.key.lower() != name:
                found = None
            self._bundles[name] = found
        return self._bundles[name]

    # Entries

    def put_entry(self, scope: str, key: str, manifest: bytes) -> None:
        parsed = Manifest.from_json(manifest)
        with self._lock:
            self._repack([blob.digest for blob in parsed.blobs])
            self._upload_spool()
            unknown = [b.digest for b in parsed.blobs if b.digest not in self._located]
            if unknown:
                raise OSError(
                    f"the entry names blob {unknown[0][:19]}, which this save "
                    "did not store nor find"
                )
            locations = {b.digest: self._located[b.digest].to_json() for b in parsed.blobs}
        document = json.dumps(
            {"format": ENTRY_FORMAT, "manifest": manifest.decode(), "locations": locations},
            separators=(",", ":"),
        ).encode()
        self._store_new(_entry_prefix(scope, key), document)
        if parsed.family is not None:
            self._store_new(f"{FAMILY}{encode(scope)}:{parsed.family}:{encode(key)}", document)

    def get_entry(self, scope: str, key: str) -> bytes | None:
        return self._read_newest(_entry_prefix(scope, key) + ":", (scope, key))

    def newest_of_family(self, scope: str, family: str) -> bytes | None:
        """The newest entry of ``scope`` holding the paths ``family`` names."""
        return self._read_newest(f"{FAMILY}{encode(scope)}:{family}:")

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
        """Every save of the entry, through the REST API."""
        for row in self._entry_rows().get((scope, key), []):
            self.api.delete(row.id)
        self._entry_bundles.pop((scope, key), None)
        self._deleted.add((scope, key))

    def list_entries(self, scope: str | None = None) -> list[EntryInfo]:
        """The entries (the newest save of each scope and key), through the REST API;
        without its token, nothing, with a warning."""
        if self.api.problem:
            if not self._told_unlistable:
                self._told_unlistable = True
                log.warning(
                    "nothing listed, nothing pruned: %s. GitHub itself evicts entries "
                    "unused for 7 days and the oldest beyond 10 GB a repository",
                    self.api.problem,
                )
            return []
        found = []
        for (entry_scope, key), rows in self._entry_rows().items():
            if scope is None or entry_scope == scope:
                newest = rows[0]
                found.append(
                    EntryInfo(
                        entry_scope,
                        key,
                        newest.created,
                        max(row.last_used for row in rows),
                        sum(row.size for row in rows),
                    )
                )
        return found

    def _listing(self) -> list[CacheRow]:
        if self._rows is None:
            self._rows = self.api.list("ci-integration-")
        return self._rows

    def _entry_rows(self) -> dict[tuple[str, str], list[CacheRow]]:
        """The saves of each (scope, key), the newest first."""
        groups: dict[tuple[str, str], list[CacheRow]] = {}
        for row in self._listing():
            parsed = _parse_entry_name(row.key)
            if parsed is not None:
                groups.setdefault(parsed, []).append(row)
        for rows in groups.values():
            rows.sort(key=lambda row: (row.created, row.key), reverse=True)
        return groups

    def _read_newest(self, prefix: str, entry: tuple[str, str] | None = None) -> bytes | None:
        """The manifest of the newest entry under ``prefix``; its blobs' places learnt."""
        if len(prefix) > MAX_KEY_LENGTH:
            return None
        found = self.service.lookup(prefix, VERSION)
        if found is None or not found.key.lower().startswith(prefix):
            return None
        document = self.service.download(found)
        try:
            manifest, locations = _parse_entry(document)
        except CorruptDataError as exc:
            log.warning("ignoring cache entry %s: %s", found.key[:80], exc)
            return None
        with self._lock:
            for digest, where in locations.items():
                self._located.setdefault(digest, where)
            if entry is not None:
                self._entry_bundles[entry] = {where.bundle for where in locations.values()}
        return manifest

    # Writing

    def _repack(self, digests: list[str]) -> None:
        """Copy into the spool the blobs of the bundles over MAX_BUNDLES, smallest
        first, so the entry names few bundles. Called holding the lock."""
        used: dict[str, int] = {}
        for digest in digests:
            where = self._located.get(digest)
            if where is not None and digest not in self._spool:
                used[where.bundle] = used.get(where.bundle, 0) + where.size
        new = any(digest in self._spool for digest in digests)
        allowed = MAX_BUNDLES - 1 if new else MAX_BUNDLES
        if len(used) <= allowed:
            return
        moved = set(sorted(used, key=used.__getitem__)[: len(used) - (MAX_BUNDLES - 1)])
        for digest in digests:
            where = self._located.get(digest)
            if where is not None and where.bundle in moved and digest not in self._spool:
                self._lock.release()  # a download may take a while
                try:
                    data = self.get_blob(digest)
                finally:
                    self._lock.acquire()
                self._spool.add(digest, data)
        log.debug("repacked %d bundles into the new one", len(moved))

    def _upload_spool(self) -> None:
        """The spooled blobs as one new bundle. Called holding the lock."""
        spool = self._spool
        if not spool.blobs:
            return
        if self._uploaded + spool.size > REPOSITORY_QUOTA_BYTES:
            raise OSError(
                f"this save would upload over the {REPOSITORY_QUOTA_BYTES / 1000**3:g} GB "
                "GitHub keeps for a repository's cache, evicting every other entry: not "
                "saved (cache less, or use an s3:// or oci:// store)"
            )
        name = f"{BUNDLE}{_stamp()}"
        self._store(name, spool)
        self._uploaded += spool.size
        for digest, (offset, size) in spool.blobs.items():
            self._located[digest] = Location(name, offset, size)
        self._spool = Spool()
        spool.close()

    def _store_new(self, prefix: str, document: bytes) -> None:
        try:
            self._store(f"{prefix}:{_stamp()}", InMemory(document))
        except Conflict:  # a reservation of ours whose answer was lost, retried
            self._store(f"{prefix}:{_stamp()}", InMemory(document))

    def _store(self, name: str, payload: Payload) -> None:
        if len(name) > MAX_KEY_LENGTH:
            raise OSError(
                f"the cache key is {len(name)} characters once encoded, over the GitHub "
                f"cache's {MAX_KEY_LENGTH}: use a shorter key"
            )
        self.service.store(name, VERSION, payload)
        self.entries_created += 1

    # Concurrency and leftovers

    def lock(self, *, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return no_lock()

    def sweep(self) -> int:
        """After a prune: the older saves of each entry and family, and the bundles no
        entry read by this command names (past their grace). Nothing without a listing."""
        if self._rows is None:
            return 0
        entries = self._entry_rows()
        doomed = [row for rows in entries.values() for row in rows[1:]]
        live = entries.keys() - self._deleted
        # Of each family, the newest save whose entry is live stays; the rest go.
        families: dict[tuple[str, str], list[tuple[CacheRow, tuple[str, str]]]] = {}
        for row in self._listing():
            parsed = _parse_family_name(row.key)
            if parsed is not None:
                families.setdefault(parsed[0], []).append((row, parsed[1]))
        for rows in families.values():
            rows.sort(key=lambda pair: pair[0].created, reverse=True)
            kept = next((row for row, entry in rows if entry in live), None)
            doomed += [row for row, _ in rows if row is not kept]
        named = set().union(*self._entry_bundles.values())
        now = time.time()
        doomed += [
            row
            for row in self._listing()
            if row.key.lower().startswith(BUNDLE)
            and row.key.lower() not in named
            and now - row.created > BUNDLE_GRACE_SECONDS
        ]
        for row in doomed:
            self.api.delete(row.id)
        if doomed:
            log.info(
                "removed %d superseded saves and unreferenced bundles (%d bytes)",
                len(doomed),
                sum(row.size for row in doomed),
            )
        return len(doomed)


def _entry_prefix(scope: str, key: str) -> str:
    return f"{ENTRY}{encode(scope)}:{encode(key)}"


def _decoded_parts(name: str, prefix: str, count: int) -> list[str] | None:
    """The parts before the stamp of a cache key ``prefix + PART:...:STAMP`` that has
    ``count`` parts, percent-decoded; None unless each decodes back exactly."""
    name = name.lower()
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix) :].split(":")
    if len(parts) != count:
        return None
    decoded = [urllib.parse.unquote(part) for part in parts[:-1]]
    same = all(encode(d) == part for d, part in zip(decoded, parts[:-1], strict=True))
    return decoded if same else None


def _parse_entry_name(name: str) -> tuple[str, str] | None:
    """(scope, key) of an entry's cache key ``ENTRY + SCOPE:KEY:STAMP``, else None."""
    parts = _decoded_parts(name, ENTRY, 3)
    return None if parts is None else (parts[0], parts[1])


def _parse_family_name(name: str) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """((scope, family), (scope, key)) of a family index's cache key
    ``FAMILY + SCOPE:FAMILY:KEY:STAMP``, else None."""
    parts = _decoded_parts(name, FAMILY, 4)
    return None if parts is None else ((parts[0], parts[1]), (parts[0], parts[2]))


def _parse_entry(document: bytes) -> tuple[bytes, dict[str, Location]]:
    """An entry's manifest and its blobs' places, checked as untrusted input."""
    if len(document) > MAX_ENTRY_DOCUMENT_BYTES:
        raise CorruptDataError(f"the entry is {len(document)} bytes, too large")
    try:
        parsed = json.loads(document)
        if parsed["format"] != ENTRY_FORMAT:
            raise CorruptDataError(f"entry format {str(parsed['format'])[:40]!r} is not ours")
        manifest = str(parsed["manifest"]).encode()
        raw = dict(parsed["locations"])
    except CorruptDataError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptDataError(f"the entry is malformed: {exc!r}") from None
    locations = {str(digest): Location.from_json(where, BUNDLE) for digest, where in raw.items()}
    named = {blob.digest for blob in Manifest.from_json(manifest).blobs}
    if named - locations.keys():
        raise CorruptDataError("the entry does not say where each of its blobs lives")
    return manifest, locations
