"""The store as the build's cache: stage images, base images and cache mounts as
entries along the job's scope chain."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence

from ci_integration.engine.images import Engine, ImageInfo
from ci_integration.errors import CacheError
from ci_integration.images.build import BuildOptions, CacheBackend, StageReport, WholeTarget
from ci_integration.images.builders import Builder, CliBuilder
from ci_integration.images.dockerfile import Stage
from ci_integration.images.layers import (
    StoredImage,
    find_image,
    info_matches,
    load_images,
    save_image,
)
from ci_integration.images.mounts import MountCache, usable_mounts
from ci_integration.images.saved import Saved
from ci_integration.store.manifest import Manifest
from ci_integration.store.scoped import Hit, ScopedStore

log = logging.getLogger(__name__)


class StoreCache(CacheBackend):
    def __init__(self, engine: Engine, store: ScopedStore, repository: str) -> None:
        self.engine = engine
        self.store = store
        self.repository = repository
        self.restored: dict[str, StoredImage] = {}
        self.bases: dict[str, StoredImage] = {}
        self.saved: list[StoredImage] = []
        self.also_known: list[Manifest] = []  # entries of other kinds a save may reuse

    def key_prefix(self, stage: str) -> str:
        return f"stage:{self.repository}:{stage}:"

    def find_bases(self, refs: Sequence[str]) -> dict[str, str]:
        for ref in refs:
            stored = find_image(self.store, f"image:{ref}")
            if stored is not None:
                self.bases[ref] = stored
        return {ref: stored.image_id for ref, stored in self.bases.items()}

    def restore(
        self, reports: Sequence[StageReport], tags: Mapping[str, str], bases: Sequence[str]
    ) -> dict[str, ImageInfo]:
        wanted = [(self.bases[ref], [ref]) for ref in bases if ref in self.bases]
        for report in reports:
            stored = find_image(self.store, report.key, [self.key_prefix(report.stage)])
            if stored is not None:
                self.restored[report.stage] = stored
                report.restored = Hit.EXACT if stored.manifest.key == report.key else Hit.PARTIAL
                report.restored_from = stored.manifest.scope
                wanted.append((stored, [tags[report.stage]]))
        transfers = load_images(self.engine, self.store, wanted, self.engine.present_chain_ids())
        by_tag = {transfer.ref: transfer for transfer in transfers}
        infos = {}
        for report in reports:
            if report.stage in self.restored:
                report.loaded_layers = by_tag[tags[report.stage]].moved_layers
                info = self.engine.image(tags[report.stage])
                if info is not None:
                    infos[report.stage] = info
        return infos

    def restore_target(self, whole: WholeTarget) -> ImageInfo | None:
        target = whole.reports[-1]
        stored = find_image(self.store, target.key)
        if stored is None:
            return None
        self.restored[target.stage] = stored
        target.restored, target.restored_from = Hit.EXACT, stored.manifest.scope
        wanted = [(stored, [whole.tags[target.stage]])]
        wanted += [(self.bases[ref], [ref]) for ref in whole.bases if ref in self.bases]
        present = self.engine.present_chain_ids()
        copy = (0, whole.labels, whole.image)
        loaded = load_images(self.engine, self.store, wanted, present, [copy])
        target.loaded_layers = loaded[0].moved_layers
        info = self.engine.image(whole.image)
        if info is None or info.diff_ids != stored.diff_ids:
            raise CacheError(f"the engine did not take the image of {target.key} with labels")
        return info

    def save_stage(
        self, report: StageReport, tag: str, info: ImageInfo, *, target: bool = False
    ) -> None:
        earlier = self.restored.get(report.stage)
        if info_matches(info, earlier) and earlier is not None:
            # Same layers: at most a manifest, no upload.
            report.saved = keep_entry(self.store, earlier.manifest, report.key)
            return
        transfer = save_image(
            self.engine,
            self.store,
            tag,
            report.key,
            self._known(),
            {"stage": report.stage},
            also=self.also_known,
        )
        if transfer.stored is not None:
            self.saved.append(transfer.stored)
        report.saved = Saved.UPLOADED
        report.uploaded_bytes = transfer.moved_bytes
        report.uploaded_layers = transfer.moved_layers

    def keep(self, report: StageReport) -> None:
        stored = find_image(self.store, report.key)
        if stored is not None:
            report.saved = keep_entry(self.store, stored.manifest, report.key)
        else:
            report.saved = Saved.IN_TARGET

    def save_base(self, ref: str) -> None:
        info = self.engine.image(ref)
        if info is None:
            return
        stored = self.bases.get(ref) or find_image(self.store, f"image:{ref}")
        if stored is not None and stored.image_id == info.id:
            return
        save_image(self.engine, self.store, ref, f"image:{ref}", self._known())

    def _known(self) -> list[StoredImage]:
        """Entries whose pieces a save need not upload again: all this build has seen."""
        return [*self.restored.values(), *self.bases.values(), *self.saved]

    def mount_cache(
        self, options: BuildOptions, stages: Sequence[Stage], builder: Builder
    ) -> MountCache | None:
        mounts = usable_mounts(
            [mount for stage in stages for mount in stage.cache_mounts], options.mount_exclude
        )
        if not mounts or not options.mount_cache:
            return None
        if not isinstance(builder, CliBuilder):
            log.info(
                "cache mounts are not carried across jobs: the %s builder has none", builder.name
            )
            return None
        helper = options.mount_helper_image or helper_image(stages, mounts)
        if helper is None:
            log.warning(
                "cache mounts not carried: no stage has a base image with a shell;"
                " pass --mount-helper-image"
            )
            return None
        return MountCache(
            builder.docker,
            builder.env,
            self.store,
            self.repository,
            mounts,
            helper,
            buildx=builder.buildx,
        )


def keep_entry(store: ScopedStore, manifest: Manifest, key: str) -> Saved:
    """An entry whose content this job would save under ``key``: kept as it is when it
    is this job's already (``unchanged``), else its manifest written under ``key`` in
    the job's scope (``recorded``): the same pieces, nothing uploaded."""
    if manifest.key == key and manifest.scope == store.write_scope:
        return Saved.UNCHANGED
    store.commit(
        dataclasses.replace(manifest, key=key, scope=store.write_scope, created=time.time())
    )
    return Saved.RECORDED


def helper_image(stages: Sequence[Stage], mounts: Sequence[object]) -> str | None:
    """The base image of the first stage with a cache mount: it ran that RUN step,
    so it has a shell and cp. None when every such stage starts from scratch."""
    by_ref = {stage.ref: stage for stage in stages}
    for stage in stages:
        if not stage.cache_mounts:
            continue
        base = stage
        while base.base in by_ref or base.base.lower() in by_ref:
            base = by_ref.get(base.base) or by_ref[base.base.lower()]
        if base.base != "scratch":
            return base.base
    return None
