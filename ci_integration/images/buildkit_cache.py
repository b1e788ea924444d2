"""The store as the build's cache through BuildKit's own cache export, for engines where
stage images cannot carry it: the containerd image store (``--cache-from IMAGE`` of
a local image is looked up in a registry there) and buildx drivers other than
``docker`` (engine/facts.py decides).

Each stage is still built on its own, so a failure late in the build keeps the cache
of the stages before it. A stage's build exports its cache with ``--cache-to
type=local,dest=DIR,mode=max``: an OCI layout holding the cache of every step of the
stage and of the stages it needs. The folder is saved as an entry of its own, keyed
like the stage (``buildcache:`` for ``stage:``), through the content-addressed store,
so a blob of the layout that the store holds is never uploaded again. Before the
build, each stage's entry is found along the scope chain (exact key, else the stage's
newest entry) and every one restored is a ``--cache-from type=local,src=DIR`` of
every stage's build. Base images go through the store as images, as with stage
images.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ci_integration import dircache
from ci_integration.engine.facts import BUILDKIT_CACHE
from ci_integration.engine.images import Engine, ImageInfo
from ci_integration.images.build import SourceRule, StageReport
from ci_integration.images.layers import load_images
from ci_integration.images.store_cache import StoreCache
from ci_integration.store.manifest import Manifest
from ci_integration.store.scoped import ScopedStore

log = logging.getLogger(__name__)

LOGICAL_PATH = "buildkit-cache"  # what dircache records as the entry's path


class BuildKitCache(StoreCache):
    mechanism = BUILDKIT_CACHE

    def __init__(self, engine: Engine, store: ScopedStore, repository: str) -> None:
        super().__init__(engine, store, repository)
        self.scratch = Path(tempfile.mkdtemp(prefix="ci-integration-buildkit-"))
        self.imported: dict[str, Path] = {}  # stage -> the folder of its restored cache
        self.restored_entries: dict[str, Manifest] = {}  # stage -> the entry restored
        self.exported: dict[str, Path] = {}  # stage -> the folder its build exports to
        self.entries: list[Manifest] = []  # entries restored or saved: their pieces are known

    def cache_key(self, stage_key: str) -> str:
        return "buildcache:" + stage_key.removeprefix("stage:")

    def restore(
        self, reports: Sequence[StageReport], tags: Mapping[str, str], bases: Sequence[str]
    ) -> dict[str, ImageInfo]:
        wanted = [(self.bases[ref], [ref]) for ref in bases if ref in self.bases]
        if wanted:
            load_images(self.engine, self.store, wanted, self.engine.present_chain_ids())
        for report in reports:
            folder = self.scratch / "from" / report.stage
            prefix = self.cache_key(self.key_prefix(report.stage))
            result = dircache.restore(
                self.store, self.cache_key(report.key), [prefix], [LOGICAL_PATH], [folder]
            )
            if result.hit == "miss" or result.manifest is None:
                continue
            report.restored, report.restored_from = result.hit, result.scope or ""
            self.imported[report.stage] = folder
            self.restored_entries[report.stage] = result.manifest
            self.entries.append(result.manifest)
        # No stage image comes back: every stage is built, its steps from the cache.
        return {}

    def cache_sources(
        self, stage: str, stage_images: Mapping[str, str], *, buildkit: bool, rule: SourceRule
    ) -> tuple[str, ...]:
        # The stage's own cache where there is one (see CacheBackend.cache_sources).
        folders = {ref: f"type=local,src={folder}" for ref, folder in self.imported.items()}
        return rule.pick(stage, folders)

    def cache_target(self, stage: str) -> str | None:
        folder = self.scratch / "to" / stage
        shutil.rmtree(folder, ignore_errors=True)  # a stage built twice exports once
        self.exported[stage] = folder
        return f"type=local,dest={folder},mode=max"

    def save_stage(self, report: StageReport, tag: str, info: ImageInfo) -> None:
        folder = self.exported.get(report.stage)
        if folder is None or not (folder / "index.json").is_file():
            # Built along by the target's build: its cache is in the target's export.
            report.saved = "not saved"
            return
        earlier = self.restored_entries.get(report.stage)
        if earlier is not None and _same_layout(self.imported[report.stage], folder):
            key = self.cache_key(report.key)
            if earlier.key == key and earlier.scope == self.store.write_scope:
                report.saved = "unchanged"
                return
            # The same cache under a new key or in a new scope: a manifest, no upload.
            self.store.commit(dataclasses.replace(
                earlier, key=key, scope=self.store.write_scope, created=time.time()
            ))  # fmt: skip
            report.saved = "recorded"
            return
        result = dircache.save(
            self.store,
            self.cache_key(report.key),
            [LOGICAL_PATH],
            [folder],
            [self.cache_key(self.key_prefix(report.stage))],
            references=self.entries,
        )
        if result.manifest is not None:
            self.entries.append(result.manifest)
        report.saved = "unchanged" if result.unchanged else "uploaded"
        report.uploaded_bytes = result.uploaded_bytes
        before = _layers(self.imported[report.stage]) if report.stage in self.imported else set()
        report.uploaded_layers = len(_layers(folder) - before)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def _same_layout(a: Path, b: Path) -> bool:
    """Whether two cache exports hold the same cache: the same index, and the same
    blobs (named by their digest). Their files' times differ, their content not."""
    try:
        same_index = (a / "index.json").read_bytes() == (b / "index.json").read_bytes()
        return same_index and _blob_names(a) == _blob_names(b)
    except OSError:
        return False


def _blob_names(layout: Path) -> set[str]:
    return {path.name for path in (layout / "blobs" / "sha256").iterdir()}


def _layers(layout: Path) -> set[str]:
    """The digests of the layers an export's cache manifests name."""
    try:
        index = json.loads((layout / "index.json").read_bytes())
        found = set()
        for descriptor in index.get("manifests", []):
            digest = str(descriptor["digest"]).removeprefix("sha256:")
            manifest = json.loads((layout / "blobs" / "sha256" / digest).read_bytes())
            found.update(str(layer["digest"]) for layer in manifest.get("layers", []))
        return found
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
