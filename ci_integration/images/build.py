"""``build``: every stage of a multi-stage Dockerfile built, tagged and cached on its own.

Order of work:
1. Whole: when the cache holds the target's image under its exact key (the same
   Dockerfile, build args, context files and base images), that image is the
   build's result: it is loaded, a copy gets this build's labels, no builder runs
   (``--always-build`` runs it anyway). Meanwhile the engine's facts are gathered.
2. Restore: else, for each stage the target needs, the best entry along the scope
   chain (its exact key, else the newest entry of the same stage) is loaded into
   the engine, moving only missing layers; base images the engine lacks come from
   the store too. In registry mode, stage images are pulled instead.
3. Build: stage by stage, each from the cache sources SourceRule picks for it.
4. Save, also when a later stage failed: a stage whose layers equal the restored
   entry's is not uploaded, and keeps the older image (BuildKit's inline cache
   loses links when an all-CACHED rebuild is saved over its source).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from ci_integration.engine.facts import STAGE_IMAGES, EngineFacts
from ci_integration.engine.images import Engine, ImageInfo, split_reference
from ci_integration.errors import BuildError, CacheError
from ci_integration.images import dockerfile as dockerfiles
from ci_integration.images.builders import Builder, BuildOutcome, BuildRequest, Step
from ci_integration.images.context_hash import stage_keys
from ci_integration.images.dockerfile import Stage
from ci_integration.images.dockerignore import DockerIgnore
from ci_integration.images.exports import Export, export_path
from ci_integration.images.mounts import MountCache, MountReport
from ci_integration.images.saved import Saved
from ci_integration.images.stagefile import stage_dockerfile
from ci_integration.store.scoped import Hit

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BuildOptions:
    context: Path
    dockerfile: Path
    image: str
    target: str | None = None
    build_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exports: Sequence[Export] = ()
    strict: bool = False
    read_only: bool = False
    mount_cache: bool = True
    mount_exclude: Sequence[str] = ()
    mount_helper_image: str | None = None
    always_build: bool = False  # run the builder even when the target comes whole


@dataclasses.dataclass
class StageReport:
    stage: str
    key: str
    restored: Hit = Hit.MISS
    restored_from: str = ""
    built: bool = False
    steps: list[Step] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    # uploaded, unchanged, recorded, read-only, failed, not saved, or in target (the
    # target came whole: the stage's cache is the target's own)
    saved: Saved = Saved.NOT_SAVED
    uploaded_bytes: int = 0
    uploaded_layers: int = 0
    loaded_layers: int = 0

    @property
    def cached_steps(self) -> int:
        return sum(step.cached for step in self.steps)


@dataclasses.dataclass
class BuildReport:
    image: str
    builder: str
    stages: list[StageReport]
    image_id: str | None = None
    failed_stage: str | None = None
    error: str | None = None
    exported_files: int = 0
    seconds: float = 0.0
    mounts: list[MountReport] = dataclasses.field(default_factory=list)
    engine: dict[str, str | None] = dataclasses.field(default_factory=dict)  # EngineFacts
    cache_mechanism: str = ""  # the cache backend's: stage-images, registry, buildkit-cache
    whole: bool = False  # the target's image came from the cache whole: no builder ran


@dataclasses.dataclass(frozen=True)
class WholeTarget:
    """What taking the target whole asks of a cache: the stages' reports (the target's
    last), their tags, the image to name the labelled copy, and the base images."""

    reports: Sequence[StageReport]
    tags: Mapping[str, str]
    image: str
    labels: Mapping[str, str]
    bases: Sequence[str]


class CacheBackend(abc.ABC):
    """Where stage images come from and go to: the store, or a registry. A backend
    restores and saves stages; the rest has defaults for a backend that cannot."""

    mechanism = STAGE_IMAGES

    def find_bases(self, refs: Sequence[str]) -> dict[str, str]:
        """Ids of the missing base images the cache can bring, by reference."""
        return {}

    def restore_target(self, whole: WholeTarget) -> ImageInfo | None:
        """When the cache holds the target's image under its exact key: bring it in
        under its stage tag, with the bases found, and a copy with this build's labels
        under the image's name, whose info is returned. None, having loaded nothing,
        when it holds none."""
        return None

    @abc.abstractmethod
    def restore(
        self, reports: Sequence[StageReport], tags: Mapping[str, str], bases: Sequence[str]
    ) -> dict[str, ImageInfo]:
        """Bring the stages (and the bases found) into the engine; fills the reports."""

    @abc.abstractmethod
    def save_stage(
        self, report: StageReport, tag: str, info: ImageInfo, *, target: bool = False
    ) -> None:
        """Keep a built stage's image (the target's, with ``target``); fills the report."""

    def keep(self, report: StageReport) -> None:
        """A stage not built because the target came whole: its entry of these very
        inputs kept in this job's scope (a manifest, no upload), if the cache has one."""
        report.saved = Saved.IN_TARGET

    def save_base(self, ref: str) -> None:
        """Keep a base image the engine has, for agents that lack it (by default, none)."""
        return None

    def mount_cache(
        self, options: BuildOptions, stages: Sequence[Stage], builder: Builder
    ) -> MountCache | None:
        """What carries the build's cache mounts across jobs, if this cache can."""
        return None

    def cache_sources(
        self, stage: str, stage_images: Mapping[str, str], *, buildkit: bool, rule: SourceRule
    ) -> tuple[str, ...]:
        """What the build of ``stage`` takes its cache from, of the stage images on the
        engine (by stage)."""
        return stage_images_as_cache(stage, stage_images, buildkit=buildkit, rule=rule)

    def cache_target(self, stage: str) -> str | None:
        """Where a stage's build exports its cache to, if anywhere but its image."""
        return None

    def close(self) -> None:
        """Let go of what the cache holds for the build (temporary folders), if any."""
        return None


@dataclasses.dataclass(frozen=True)
class Toolchain:
    """What builds, known once the engine's facts are in: the builder, the cache backend
    that fits it and the engine, and those facts."""

    builder: Builder
    cache: CacheBackend | None
    facts: EngineFacts | None = None


def build(
    options: BuildOptions,
    engine: Engine,
    images: CacheBackend | None,
    toolchain: Callable[[], Toolchain],
    on_line: Callable[[str], None],
) -> BuildReport:
    """Take the target whole, or restore, build stage by stage, save; raises BuildError
    after saving if a stage failed. ``images`` finds base images and takes a target
    whole before ``toolchain`` is asked for (its answer may wait on the client)."""
    started = time.monotonic()
    parsed = dockerfiles.load(options.dockerfile, options.build_args)
    stages = parsed.stages_for(options.target)
    target = stages[-1]
    repository = split_reference(options.image)[0]
    ignore = DockerIgnore.load(options.context, options.dockerfile)
    external = sorted({ref for stage in stages for ref in stage.external_images})
    base_ids = {ref: info.id for ref in external if (info := engine.image(ref)) is not None}
    missing_bases = [ref for ref in external if ref not in base_ids]
    if images is not None and missing_bases:
        with _cache_trouble(options.strict, "base images not found in the cache"):
            # A base image's id is part of its stages' keys: a new base is a new key.
            base_ids.update(images.find_bases(missing_bases))
    keys = stage_keys(parsed, stages, options.context, options.build_args, ignore, base_ids)
    reports = [
        StageReport(stage.ref, f"stage:{repository}:{stage.ref}:{keys[stage.ref][:16]}")
        for stage in stages
    ]
    tags = {stage.ref: f"{repository}:stage-{stage.ref}" for stage in stages}
    whole: ImageInfo | None = None
    if images is not None and _may_come_whole(options, parsed, target):
        with _cache_trouble(options.strict, "building without the cache"):
            wanted = WholeTarget(reports, tags, options.image, options.labels, missing_bases)
            whole = images.restore_target(wanted)
    tools = toolchain()
    builder, cache = tools.builder, tools.cache
    report = BuildReport(options.image, builder.name, reports)
    report.engine = tools.facts.as_dict() if tools.facts is not None else {}
    report.cache_mechanism = cache.mechanism if cache is not None else ""

    built: dict[str, ImageInfo] = {}
    mount_cache = None
    if whole is not None:
        # The labelled copy has the kept image's layers: what its save compares.
        built[target.ref] = whole
        _came_whole(report, stages)
        report.image_id = whole.id
        log.info(
            "%s comes whole from the cache (its inputs are unchanged): no stage built",
            options.image,
        )
    else:
        restored: dict[str, ImageInfo] = {}
        if cache is not None:
            with _cache_trouble(options.strict, "building without the cache"):
                restored = cache.restore(reports, tags, missing_bases)
            mount_cache = cache.mount_cache(options, stages, builder)
        if mount_cache is not None:
            report.mounts = mount_cache.reports
            with _cache_trouble(options.strict, "cache mounts start empty"):
                mount_cache.seed()
        _build_stages(
            options, parsed, stages, engine, tools, tags, restored, report, built, on_line
        )

    if cache is not None and not options.read_only:
        for stage_report in reports:
            with _cache_trouble(options.strict, f"stage {stage_report.stage} not saved"):
                if stage_report.stage in built:
                    stage_report.saved = Saved.FAILED
                    cache.save_stage(
                        stage_report,
                        tags[stage_report.stage],
                        built[stage_report.stage],
                        target=stage_report is reports[-1],
                    )
                elif report.whole:
                    stage_report.saved = Saved.FAILED
                    cache.keep(stage_report)
        with _cache_trouble(options.strict, "base images not saved"):
            for ref in external:
                cache.save_base(ref)
        if mount_cache is not None:
            with _cache_trouble(options.strict, "cache mounts not saved"):
                mount_cache.save()
    elif cache is not None:
        for stage_report in reports:
            stage_report.saved = Saved.READ_ONLY
        log.info("not saving the cache: this job is read-only")

    if report.failed_stage is None:
        for export in options.exports:
            stage_ref = parsed.stage(export.stage).ref
            if stage_ref not in tags:
                raise BuildError(f"--export names stage {export.stage}, which this build skips")
            report.exported_files += export_path(engine, tags[stage_ref], export)
    report.seconds = time.monotonic() - started
    if report.failed_stage is not None:
        raise BuildFailed(report)
    return report


def _may_come_whole(options: BuildOptions, parsed: dockerfiles.Dockerfile, target: Stage) -> bool:
    """Whether the build may take the target's image as it was kept: nothing but the
    target's image is asked of it (files exported from another stage need that one)."""
    exported = {parsed.stage(export.stage).ref for export in options.exports}
    return not options.always_build and exported <= {target.ref}


def _came_whole(report: BuildReport, stages: Sequence[Stage]) -> None:
    """Fill the report of a build whose target came whole."""
    report.whole = True
    target = report.stages[-1]
    for stage, stage_report in zip(stages, report.stages, strict=True):
        stage_report.steps = [
            Step(stage.ref, _step_text(instruction), cached=True)
            for instruction in stage.instructions
            if instruction.keyword in _BUILDKIT_STEPS
        ]
        if stage_report is not target:
            # Its key is inside the target's: it is what the target was built from.
            stage_report.restored, stage_report.restored_from = Hit.EXACT, target.restored_from


# The instructions BuildKit lists as steps of a stage (the others only set its config).
_BUILDKIT_STEPS = ("RUN", "COPY", "ADD", "WORKDIR")


def _step_text(instruction: dockerfiles.Instruction) -> str:
    flags = " ".join(
        f"--{name}={value}" if value else f"--{name}" for name, value in instruction.flags
    )
    return " ".join(part for part in (instruction.keyword, flags, instruction.arguments) if part)


def _build_stages(
    options: BuildOptions,
    parsed: dockerfiles.Dockerfile,
    stages: Sequence[Stage],
    engine: Engine,
    tools: Toolchain,
    tags: Mapping[str, str],
    restored: Mapping[str, ImageInfo],
    report: BuildReport,
    built: dict[str, ImageInfo],
    on_line: Callable[[str], None],
) -> None:
    """Build stage by stage into ``built``, stopping at the first that fails (noted in
    ``report``)."""
    builder, cache = tools.builder, tools.cache
    target, reports = stages[-1], report.stages
    rule = SourceRule(parsed)
    with stage_dockerfile(parsed, options.dockerfile, stages) as (dockerfile, names):
        by_name = {names[stage.ref]: report for stage, report in zip(stages, reports, strict=True)}
        # The target's own image holds the cache of every stage it needs. Without one,
        # each stage is built on its own first, from its own image: the target's build
        # then finds their steps in the engine's cache (another stage's image may have
        # lost the links of steps it took from a cache itself: see SourceRule).
        taken_along: set[str] = set()
        if target.ref in restored:
            taken_along = {r.stage for r in reports if r.restored is Hit.EXACT} & set(restored)
            taken_along.discard(target.ref)
        on_engine = {s.ref: tags[s.ref] for s in stages if engine.image(tags[s.ref])}
        for stage, stage_report in zip(stages, reports, strict=True):
            is_target = stage is target
            if stage.ref in taken_along:
                # Its inputs are unchanged and its image is here: the target's build
                # takes it from the cache, and reports its steps.
                built[stage.ref] = restored[stage.ref]
                continue
            request = BuildRequest(
                context=options.context,
                dockerfile=dockerfile,
                target=names[stage.ref],
                tags=(tags[stage.ref], options.image) if is_target else (tags[stage.ref],),
                build_args=options.build_args,
                cache_from=_cache_sources(cache, stage.ref, on_engine, builder, rule),
                labels=options.labels if is_target else {},
                cache_to=cache.cache_target(stage.ref) if cache is not None else None,
            )
            outcome = _run_stage(builder, request, stage_report, by_name, on_line)
            if not outcome.ok:
                report.failed_stage, report.error = stage.ref, outcome.error
                return
            info = engine.image(tags[stage.ref])
            assert info is not None
            earlier = restored.get(stage.ref)
            if earlier is not None and earlier.diff_ids == info.diff_ids and earlier.id != info.id:
                # Equal layers: keep the older image, whose cache metadata is intact.
                engine.tag(earlier.id, tags[stage.ref])
                info = earlier
            built[stage.ref] = info
            on_engine[stage.ref] = tags[stage.ref]
            if is_target:
                report.image_id = outcome.image_id


def _cache_sources(
    cache: CacheBackend | None,
    stage: str,
    stage_images: Mapping[str, str],
    builder: Builder,
    rule: SourceRule,
) -> tuple[str, ...]:
    buildkit = builder.name != "legacy"
    if cache is None:
        return stage_images_as_cache(stage, stage_images, buildkit=buildkit, rule=rule)
    return cache.cache_sources(stage, stage_images, buildkit=buildkit, rule=rule)


def stage_images_as_cache(
    stage: str, stage_images: Mapping[str, str], *, buildkit: bool, rule: SourceRule
) -> tuple[str, ...]:
    """The stage images on the engine a build takes its cache from: with BuildKit, the
    ones ``rule`` picks; the legacy builder matches a step against each image's own
    history, so it gets every one."""
    return rule.pick(stage, stage_images) if buildkit else tuple(stage_images.values())


@dataclasses.dataclass(frozen=True)
class SourceRule:
    """Which caches a BuildKit build of a stage takes, of those there are.

    BuildKit matches each step in one of its sources, picked anew each build, and a
    step matched in a source whose cache lacks the links to the steps after it leaves
    those uncached now and then (seen with Docker 28): so no two sources may hold the
    same steps. A stage's own cache holds those of the stages it is built FROM.
    """

    dockerfile: dockerfiles.Dockerfile

    def pick(self, stage: str, sources: Mapping[str, str]) -> tuple[str, ...]:
        """The stage's own source if there is one; else those of the stages it needs,
        less each stage that another of them is built FROM."""
        if stage in sources:
            return (sources[stage],)
        needed = {needed.ref for needed in self.dockerfile.stages_for(stage)} - {stage}
        present = [ref for ref in sources if ref in needed]
        inside_others = {parent for ref in present for parent in self.dockerfile.lineage(ref)}
        return tuple(sources[ref] for ref in present if ref not in inside_others)


class BuildFailed(BuildError):
    def __init__(self, report: BuildReport) -> None:
        self.report = report
        super().__init__(f"stage {report.failed_stage} failed: {report.error}")


def _run_stage(
    builder: Builder,
    request: BuildRequest,
    report: StageReport,
    by_name: Mapping[str, StageReport],
    on_line: Callable[[str], None],
) -> BuildOutcome:
    """Build one stage; its steps, and those of stages it built along that were not
    built on their own, go to their reports."""
    started = time.monotonic()
    outcome = builder.build(request, on_line)
    report.seconds = time.monotonic() - started
    report.built = outcome.ok
    report.steps = []
    owners = [report, *(r for r in by_name.values() if not r.built and not r.steps)]
    for step in outcome.steps:
        owner = by_name.get(step.stage)
        if owner is not None and any(owner is eligible for eligible in owners):
            owner.steps.append(step)
    return outcome


@contextlib.contextmanager
def _cache_trouble(strict: bool, consequence: str) -> Iterator[None]:
    try:
        yield
    except (CacheError, OSError) as exc:
        if strict:
            raise CacheError(f"{consequence}: {exc}") from exc
        log.warning("%s: %s", consequence, exc)
