"""A job's view of a store: reads fall back along the scope chain, writes stay in
the job's own scope, and every blob is checked against its digest when read."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from ci_integration.errors import CacheError, CorruptDataError
from ci_integration.status import Status
from ci_integration.store.base import (
    BlobNotFound,
    FindsNewestOfFamily,
    Store,
    digest_of,
    keys_by_prefix,
)
from ci_integration.store.journal import Journal
from ci_integration.store.manifest import Manifest, family_of

log = logging.getLogger(__name__)

# Looking for the newest entry of a family in a store that lists, at most this many
# manifests of a scope are read (newest first).
MAX_FAMILY_READS = 32


class Hit(Status):
    """How a restore found its entry: its very key, a restore-key prefix, or nothing;
    or, for a stage the registry cache brings, pulled (the registry has the newest
    image of the stage's scope, not a key). A string where it is printed and in
    JSON (``cache_hit_kind``), as actions/cache words it."""

    EXACT = "exact"
    PARTIAL = "partial"
    MISS = "miss"
    PULLED = "pulled"


@dataclasses.dataclass(frozen=True)
class Match:
    manifest: Manifest
    exact: bool

    @property
    def hit(self) -> Hit:
        return Hit.EXACT if self.exact else Hit.PARTIAL


class ScopedStore:
    def __init__(
        self,
        store: Store,
        scope_chain: Sequence[str],
        *,
        read_only: bool = False,
        write_only: bool = False,
        why: str = "",
        journal: Journal | None = None,
    ):
        if not scope_chain:
            raise ValueError("a scope chain needs at least the job's own scope")
        self.store = store
        self.scope_chain = list(scope_chain)
        self.read_only = read_only
        # A write-only job (GitHub's ACTIONS_CACHE_MODE) finds nothing: it never reads.
        self.write_only = write_only
        self.why = why  # what made the job read-only or write-only, for its log line
        self.journal = journal
        self._told_write_only = False

    @property
    def write_scope(self) -> str:
        return self.scope_chain[0]

    # Entries

    def find(
        self,
        key: str,
        restore_keys: Sequence[str] = (),
        *,
        kind: str,
        accept: Callable[[Manifest], bool] = lambda manifest: True,
    ) -> Match | None:
        """The exact key in any scope of the chain (own scope first); else, for each
        restore-key prefix in turn, the newest entry of each scope in chain order."""
        if self._not_reading():
            return None
        for scope in self.scope_chain:
            manifest = self.read_entry(scope, key, kind)
            if manifest and accept(manifest):
                return Match(manifest, exact=True)
        for prefix in restore_keys:
            for scope in self.scope_chain:
                for candidate in keys_by_prefix(self.store, scope, prefix):
                    manifest = self.read_entry(scope, candidate, kind)
                    if manifest and accept(manifest):
                        return Match(manifest, exact=False)
        return None

    def _not_reading(self) -> bool:
        if self.write_only and not self._told_write_only:
            self._told_write_only = True
            log.info("not reading the cache: this job is write-only (%s)", self.why)
        return self.write_only

    def read_entry(self, scope: str, key: str, kind: str) -> Manifest | None:
        """The manifest, or None when absent, malformed (with a warning), of another
        kind, or when the job is write-only."""
        if self._not_reading():
            return None
        manifest = self._parse(self.store.get_entry(scope, key), scope, key)
        if manifest is None or manifest.kind != kind or manifest.key != key:
            return None
        return manifest

    def _parse(self, data: bytes | None, scope: str, key: str = "") -> Manifest | None:
        if data is None:
            return None
        try:
            manifest = Manifest.from_json(data)
        except CorruptDataError as exc:
            log.warning(
                "ignoring cache entry %s in %s: %s", key or "(a family's newest)", scope, exc
            )
            return None
        return manifest if manifest.scope == scope else None

    def mark_used(self, manifest: Manifest) -> None:
        """The entry was restored: its last use is now, and the job remembers it."""
        self.store.touch_entry(manifest.scope, manifest.key)
        if self.journal is not None:
            self.journal.record(manifest.scope, manifest.key, manifest.kind)

    def restored_by_job(self) -> list[Manifest]:
        """The entries this job restored (of any kind), the latest first."""
        if self.journal is None or self._not_reading():
            return []
        found = []
        for restored in self.journal.restored():
            manifest = self.read_entry(restored.scope, restored.key, restored.kind)
            if manifest is not None:
                found.append(manifest)
        return found

    def newest_of_family(self, kind: str, paths: Sequence[str]) -> Manifest | None:
        """The newest entry holding ``paths`` whatever its key: in the job's scope,
        else along the chain; the backend's own lookup where it has one."""
        if self._not_reading():
            return None
        family = family_of(kind, paths)
        for scope in self.scope_chain:
            if isinstance(self.store, FindsNewestOfFamily):
                manifest = self._parse(self.store.newest_of_family(scope, family), scope)
                if manifest is not None and manifest.family == family:
                    return manifest
                continue
            entries = sorted(self.store.list_entries(scope), key=lambda e: e.created, reverse=True)
            for entry in entries[:MAX_FAMILY_READS]:
                manifest = self.read_entry(scope, entry.key, kind)
                if manifest is not None and manifest.family == family:
                    return manifest
        return None

    def commit(self, manifest: Manifest) -> None:
        """Write the entry, last: every blob it names is already stored."""
        self._check_writable()
        if manifest.scope != self.write_scope:
            raise CacheError(f"a job in scope {self.write_scope} cannot write {manifest.scope}")
        self.store.put_entry(manifest.scope, manifest.key, manifest.to_json())

    # Blobs

    def upload(self, data: bytes) -> tuple[str, bool]:
        """Store ``data`` unless it is there already; returns (digest, uploaded)."""
        self._check_writable()
        digest = digest_of(data)
        if self.store.has_blob(digest):
            return digest, False
        self.store.put_blob(digest, data)
        return digest, True

    def download(self, digest: str) -> bytes:
        """The blob's verified bytes. A corrupt blob is removed and raises
        CorruptDataError; a missing one raises CorruptDataError too."""
        try:
            data = self.store.get_blob(digest)
        except BlobNotFound:
            raise CorruptDataError(f"blob {digest[:19]} is missing from the store") from None
        if digest_of(data) != digest:
            if self.read_only:  # left for a job that may write to remove
                raise CorruptDataError(f"blob {digest[:19]} is corrupt")
            self.store.delete_blob(digest)
            raise CorruptDataError(f"blob {digest[:19]} is corrupt and was removed")
        return data

    def _check_writable(self) -> None:
        """Every write goes through here: a read-only job (a pull request from a fork:
        untrusted code) writes nothing, whichever command asks."""
        if self.read_only:
            raise CacheError(f"this job may not write to the cache ({self.why or 'read-only'})")
