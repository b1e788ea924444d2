"""``run --ccache DIR``: a host ccache folder for compiles at run time, restored from
the store before the command and saved after it, with this run's hit rate."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from ci_integration import dircache
from ci_integration.ccache import CcacheStats, read_stats
from ci_integration.errors import CacheError
from ci_integration.store.scoped import Hit, ScopedStore

log = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = "10G"
LOGICAL_PATH = "ccache"


class CcacheFolder:
    def __init__(self, folder: Path, key: str, store: ScopedStore, *, strict: bool) -> None:
        self.folder = folder
        self.key = key
        self.store = store  # a read-only job's store: the folder is restored, never saved
        self.strict = strict
        self.before = CcacheStats()
        self.this_run: CcacheStats | None = None

    def restore(self) -> Hit:
        """Fill the folder from the store (own scope, else the target's, else the
        default branch's; the key's literal prefix as fallback). Returns the hit."""
        result = dircache.RestoreResult(Hit.MISS)
        with self._trouble("ccache starts cold"):
            fallback = [self.key.split("{", 1)[0]] if "{" in self.key else []
            result = dircache.restore(self.store, self.key, fallback, [LOGICAL_PATH], [self.folder])
        self.folder.mkdir(parents=True, exist_ok=True)
        self.before = read_stats(self.folder)
        if result.hit is Hit.MISS:
            log.info("ccache %s: nothing stored yet, starting cold", self.folder)
        else:
            log.info("ccache %s: %s hit from %s", self.folder, result.hit, result.scope)
        return result.hit

    def finish(self) -> CcacheStats:
        """Report this run's hits and misses, then save the folder."""
        self.this_run = read_stats(self.folder) - self.before
        log.info("ccache this run: %s", self.this_run.describe())
        if self.store.read_only:
            log.info("not saving ccache: this job is read-only (%s)", self.store.why)
        elif not any(path.is_file() for path in self.folder.rglob("*")):
            log.info("not saving ccache: %s holds no files (the stored entry stays)", self.folder)
        else:
            with self._trouble("ccache not saved"):
                result = dircache.save(self.store, self.key, [LOGICAL_PATH], [self.folder])
                log.info(
                    "ccache saved: %d files, %d bytes uploaded", result.files, result.uploaded_bytes
                )
        return self.this_run

    @contextlib.contextmanager
    def _trouble(self, consequence: str) -> Iterator[None]:
        try:
            with self.store.store.lock(exclusive=False):
                yield
        except (CacheError, OSError) as exc:
            if self.strict:
                raise CacheError(f"{consequence}: {exc}") from exc
            log.warning("%s: %s", consequence, exc)
