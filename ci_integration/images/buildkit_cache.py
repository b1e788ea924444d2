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
images, and so does the target's own image: a build of the same inputs takes it
whole (see build.py), and its layers are blobs of the export, already stored.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ci_integration import dircache
from ci_integration.engine.facts import BUILDKIT_CACHE
from ci_integration.engine.images import ImageInfo
from ci_integration.images.build import (
    BuildOptions,
    CacheBackend,
    SourceRule,
    StageReport,
    WholeTarget,
)
from ci_integration.images.builders import Builder
from ci_integration.images.dockerfile import Stage
from ci_integration.images.layers import find_image, load_images
from ci_integration.images.mounts import MountCache
from ci_integration.images.saved import Saved
from ci_integration.images.store_cache import StoreCache, keep_entry
from ci_integration.store.manifest import Manifest
from ci_integration.store.scoped import Hit

log = logging.getLogger(__name__)

LOGICAL_PATH = "buildkit-cache"  # what dircache records as the entry's path


class BuildKitCache(CacheBackend):
    """The stages' cache as BuildKit exports; images (base images, the target's own
    image for a build whose inputs are unchanged) through ``images``."""

    mechanism = BUILDKIT_CACHE

    def __init__(self, images: StoreCache) -> None:
        self.images = images
        self.store = images.store
        self.scratch = Path(tempfile.mkdtemp(prefix="ci-integration-buildkit-"))
        self.imported: dict[str, Path] = {}  # stage -> the folder of its restored cache
        self.restored_entries: dict[str, Manifest] = {}  # stage -> the entry restored
        self.exported: dict[str, Path] = {}  # stage -> the folder its build exports to
        self.entries: list[Manifest] = images.also_known  # restored or saved: pieces known

    def cache_key(self, stage_key: str) -> str:
        return "buildcache:" + stage_key.removeprefix("stage:")

    def find_bases(self, refs: Sequence[str]) -> dict[str, str]:
        return self.images.find_bases(refs)

    def restore_target(self, whole: WholeTarget) -> ImageInfo | None:
        return self.images.restore_target(whole)

    def restore(
        self, reports: Sequence[StageReport], tags: Mapping[str, str], bases: Sequence[str]
    ) -> dict[str, ImageInfo]:
        known = self.images.bases
        wanted = [(known[ref], [ref]) for ref in bases if ref in known]
        if wanted:
            load_images(
                self.images.engine, self.store, wanted, self.images.engine.present_chain_ids()
            )
        target = reports[-1]
        # The target's own image, if kept, tells its save whether it changed.
        stored = find_image(self.store, target.key)
        if stored is not None:
            self.images.restored[target.stage] = stored
        for report in reports:
            folder = self.scratch / "from" / report.stage
            prefix = self.cache_key(self.images.key_prefix(report.stage))
            result = dircache.restore(
                self.store, self.cache_key(report.key), [prefix], [LOGICAL_PATH], [folder]
            )
            if result.hit is Hit.MISS or result.manifest is None:
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

    def save_stage(
        self, report: StageReport, tag: str, info: ImageInfo, *, target: bool = False
    ) -> None:
        folder = self.exported.get(report.stage)
        if folder is not None and (folder / "index.json").is_file():
            self._save_export(report, folder)
        elif target:
            self.keep(report)  # the target came whole: its cache export is kept as it was
        else:
            report.saved = Saved.NOT_SAVED  # built along: its cache is in the target's export
        if target:
            # The target's image too, so that a build of the same inputs takes it whole;
            # its layers are the export's blobs, so its pieces are known but the listing.
            exported = (report.saved, report.uploaded_bytes, report.uploaded_layers)
            report.uploaded_bytes = report.uploaded_layers = 0
            self.images.save_stage(report, tag, info)
            report.saved = Saved.most_done(exported[0], report.saved)
            report.uploaded_bytes += exported[1]
            report.uploaded_layers = max(report.uploaded_layers, exported[2])

    def _save_export(self, report: StageReport, folder: Path) -> None:
        earlier = self.restored_entries.get(report.stage)
        if earlier is not None and _same_layout(self.imported[report.stage], folder):
            report.saved = keep_entry(self.store, earlier, self.cache_key(report.key))
            return
        result = dircache.save(
            self.store,
            self.cache_key(report.key),
            [LOGICAL_PATH],
            [folder],
            [self.cache_key(self.images.key_prefix(report.stage))],
            references=self.entries,
        )
        if result.manifest is not None:
            self.entries.append(result.manifest)
        report.saved = Saved.UNCHANGED if result.unchanged else Saved.UPLOADED
        report.uploaded_bytes = result.uploaded_bytes
        before = _layers(self.imported[report.stage]) if report.stage in self.imported else set()
        report.uploaded_layers = len(_layers(folder) - before)

    def keep(self, report: StageReport) -> None:
        key = self.cache_key(report.key)
        found = self.store.find(key, (), kind=dircache.KIND)
        if found is not None:
            report.saved = keep_entry(self.store, found.manifest, key)
        else:
            report.saved = Saved.IN_TARGET

    def save_base(self, ref: str) -> None:
        self.images.save_base(ref)

    def mount_cache(
        self, options: BuildOptions, stages: Sequence[Stage], builder: Builder
    ) -> MountCache | None:
        return self.images.mount_cache(options, stages, builder)

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
        found: set[str] = set()
        for descriptor in index.get("manifests", []):
            digest = str(descriptor["digest"]).removeprefix("sha256:")
            manifest = json.loads((layout / "blobs" / "sha256" / digest).read_bytes())
            found.update(str(layer["digest"]) for layer in manifest.get("layers", []))
        return found
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
