"""Stage images cached in a registry: ``--registry HOST/REPO``.

Each stage is pushed as ``HOST/REPO:cache-<stage>-<scope>``; a build pulls the
stage from its own scope, else the pull request's target, else the default
branch, and pushes only when its layers changed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence

from ci_integration.engine.images import Engine, ImageInfo
from ci_integration.errors import CacheError
from ci_integration.images.build import CacheBackend, SourceRule, StageReport
from ci_integration.images.saved import Saved
from ci_integration.store.scoped import Hit

log = logging.getLogger(__name__)

MAX_TAG_LENGTH = 128


class RegistryCache(CacheBackend):
    mechanism = "registry"

    def __init__(self, engine: Engine, registry: str, scope_chain: Sequence[str]) -> None:
        if ":" in registry.rpartition("/")[2] or "@" in registry:
            raise CacheError(f"--registry {registry}: give a repository without tag, as HOST/REPO")
        self.engine = engine
        self.registry = registry
        self.scope_chain = list(scope_chain)
        self.pulled: dict[str, tuple[str, ImageInfo]] = {}

    def cache_ref(self, stage: str, scope: str) -> str:
        tag = f"cache-{stage}-{scope}"
        if len(tag) > MAX_TAG_LENGTH:
            digest = hashlib.sha256(tag.encode()).hexdigest()[:12]
            tag = f"{tag[: MAX_TAG_LENGTH - 13]}-{digest}"
        return f"{self.registry}:{tag}"

    def restore(
        self, reports: Sequence[StageReport], tags: Mapping[str, str], bases: Sequence[str]
    ) -> dict[str, ImageInfo]:
        infos = {}
        for report in reports:
            info = self._pull_stage(report, tags[report.stage])
            if info is not None:
                infos[report.stage] = info
        return infos

    def _pull_stage(self, report: StageReport, tag: str) -> ImageInfo | None:
        for scope in self.scope_chain:
            ref = self.cache_ref(report.stage, scope)
            if self.engine.pull(ref):
                info = self.engine.image(ref)
                if info is None:
                    continue
                self.engine.tag(info.id, tag)
                self.pulled[report.stage] = (scope, info)
                report.restored = Hit.PULLED
                report.restored_from = scope
                return info
        return None

    def cache_sources(
        self, stage: str, stage_images: Mapping[str, str], *, buildkit: bool, rule: SourceRule
    ) -> tuple[str, ...]:
        """BuildKit takes the cache from the registry's own copies of the stages pulled
        (the containerd image store looks a local image named as a cache source up in
        a registry, and so would fail on the local tags); the legacy builder takes it
        from the stage images on the engine."""
        if not buildkit:
            return tuple(stage_images.values())
        pulled = {name: self.cache_ref(name, scope) for name, (scope, _) in self.pulled.items()}
        return rule.pick(stage, pulled)

    def save_stage(
        self, report: StageReport, tag: str, info: ImageInfo, *, target: bool = False
    ) -> None:
        scope, pulled = self.pulled.get(report.stage, ("", None))
        if pulled is not None and scope == self.scope_chain[0] and pulled.diff_ids == info.diff_ids:
            report.saved = Saved.UNCHANGED
            return
        ref = self.cache_ref(report.stage, self.scope_chain[0])
        self.engine.tag(info.id, ref)
        self.engine.push(ref)
        report.saved = Saved.UPLOADED

    def save_base(self, ref: str) -> None:
        """Nothing to do: the registry that served the base image still has it."""
