"""A job's view of a store: reads fall back along the scope chain, writes stay in
the job's own scope, and every blob is checked against its digest when read."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from ci_integration.errors import CacheError, CorruptDataError
from ci_integration.store.base import BlobNotFound, Store, digest_of, keys_by_prefix
from ci_integration.store.manifest import Manifest

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Match:
    manifest: Manifest
    exact: bool

    @property
    def hit(self) -> str:
        return "exact" if self.exact else "partial"


class ScopedStore:
    def __init__(self, store: Store, scope_chain: Sequence[str], *, read_only: bool = False):
        if not scope_chain:
            raise ValueError("a scope chain needs at least the job's own scope")
        self.store = store
        self.scope_chain = list(scope_chain)
        self.read_only = read_only

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

    def read_entry(self, scope: str, key: str, kind: str) -> Manifest | None:
        """The manifest, or None when absent, malformed (with a warning) or of another kind."""
        data = self.store.get_entry(scope, key)
        if data is None:
            return None
        try:
            manifest = Manifest.from_json(data)
        except CorruptDataError as exc:
            log.warning("ignoring cache entry %s in %s: %s", key, scope, exc)
            return None
        if manifest.kind != kind or manifest.key != key or manifest.scope != scope:
            return None
        return manifest

    def mark_used(self, manifest: Manifest) -> None:
        self.store.touch_entry(manifest.scope, manifest.key)

    def commit(self, manifest: Manifest) -> None:
        """Write the entry, last: every blob it names is already stored."""
        if self.read_only:
            raise CacheError("this job may not write to the cache (read-only)")
        if manifest.scope != self.write_scope:
            raise CacheError(f"a job in scope {self.write_scope} cannot write {manifest.scope}")
        self.store.put_entry(manifest.scope, manifest.key, manifest.to_json())

    # Blobs

    def upload(self, data: bytes) -> tuple[str, bool]:
        """Store ``data`` unless it is there already; returns (digest, uploaded)."""
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
            self.store.delete_blob(digest)
            raise CorruptDataError(f"blob {digest[:19]} is corrupt and was removed")
        return data
