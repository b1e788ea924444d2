"""Keeping a store within bounds: drop entries by age and least-recent use, then the
blobs no entry needs any more. Works over any Store through its protocol."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter

from ci_integration.errors import CorruptDataError
from ci_integration.store.base import EntryInfo, Store
from ci_integration.store.manifest import Manifest

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PruneResult:
    removed_entries: list[EntryInfo] = dataclasses.field(default_factory=list)
    removed_blobs: int = 0
    freed_bytes: int = 0
    kept_entries: int = 0
    kept_bytes: int = 0
    temp_files: int = 0


def family(key: str) -> str:
    """A key without its last part: ``ccache-linux-1f2e`` -> ``ccache-linux-``. Entries
    of one family are versions of one cache, which ``keep_last`` counts."""
    return key[: max(key.rfind(separator) for separator in "-:/") + 1]


def prune(
    store: Store,
    *,
    max_size: int | None = None,
    max_age: float | None = None,
    keep_last: int | None = None,
    protected: frozenset[str] = frozenset(),
    dry_run: bool = False,
    now: float | None = None,
) -> PruneResult:
    """Remove, outside the ``protected`` scopes: entries unused for ``max_age``
    seconds; all but the ``keep_last`` newest of each key family in each scope; then
    the least recently used until the blobs still referenced fit in ``max_size``.
    Last, every blob no entry references that is older than the store's grace."""
    now = time.time() if now is None else now
    grace = store.blob_grace_seconds
    result = PruneResult()
    with store.lock(exclusive=True):
        live: dict[tuple[str, str], tuple[EntryInfo, Manifest]] = {}
        for info in store.list_entries():
            manifest = _read(store, info)
            expired = max_age is not None and now - info.last_used > max_age
            if manifest is None or (expired and info.scope not in protected):
                result.removed_entries.append(info)
            else:
                live[(info.scope, info.key)] = (info, manifest)
        if keep_last is not None:
            families: dict[tuple[str, str], list[EntryInfo]] = {}
            for info, _ in live.values():
                if info.scope not in protected:
                    families.setdefault((info.scope, family(info.key)), []).append(info)
            for members in families.values():
                for info in sorted(members, key=lambda e: e.created, reverse=True)[keep_last:]:
                    del live[(info.scope, info.key)]
                    result.removed_entries.append(info)

        sizes = {b.digest: b.size for _, m in live.values() for b in m.blobs}
        references = Counter(b.digest for _, m in live.values() for b in {*m.blobs})
        total = sum(sizes.values())
        evictable = [pair for pair in live.values() if pair[0].scope not in protected]
        by_last_use = sorted(evictable, key=lambda pair: pair[0].last_used)
        while max_size is not None and total > max_size and by_last_use:
            info, manifest = by_last_use.pop(0)
            del live[(info.scope, info.key)]
            result.removed_entries.append(info)
            for blob in {*manifest.blobs}:
                references[blob.digest] -= 1
                if references[blob.digest] == 0:
                    total -= blob.size

        if max_size is not None and total > max_size:
            log.warning("the protected scopes alone hold more than --max-size")
        if not dry_run:
            for info in result.removed_entries:
                store.delete_entry(info.scope, info.key)
        for stored in store.list_blobs():
            if references[stored.digest] > 0 or now - stored.modified < grace:
                continue
            result.removed_blobs += 1
            result.freed_bytes += stored.size
            if not dry_run:
                store.delete_blob(stored.digest)
        if not dry_run:
            result.temp_files = store.sweep()
    result.kept_entries, result.kept_bytes = len(live), total
    return result


def _read(store: Store, info: EntryInfo) -> Manifest | None:
    data = store.get_entry(info.scope, info.key)
    if data is None:
        return None
    try:
        return Manifest.from_json(data)
    except CorruptDataError as exc:
        log.warning("removing malformed entry %s in %s: %s", info.key, info.scope, exc)
        return None
