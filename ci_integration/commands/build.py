"""``ci-integration build``: a cached multi-stage image build."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import sys
from collections.abc import Mapping

from ci_integration import context, report
from ci_integration.commands import options
from ci_integration.engine.facts import BUILDKIT_CACHE, EngineFacts
from ci_integration.engine.images import Engine, split_reference
from ci_integration.errors import UsageError
from ci_integration.images import dockerfile as dockerfiles
from ci_integration.images.build import (
    BuildFailed,
    BuildOptions,
    BuildReport,
    CacheBackend,
    Toolchain,
    build,
)
from ci_integration.images.builders import pick_builder
from ci_integration.images.buildkit_cache import BuildKitCache
from ci_integration.images.exports import Export
from ci_integration.images.registry import RegistryCache
from ci_integration.images.saved import Saved
from ci_integration.images.store_cache import StoreCache
from ci_integration.job import Job
from ci_integration.report import human_bytes

log = logging.getLogger(__name__)

DOCKER_ENV = "CI_INTEGRATION_DOCKER"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("context", nargs="?", default=".", help="the build context (default: .)")
    parser.add_argument("-f", "--file", metavar="DOCKERFILE", help="default: CONTEXT/Dockerfile")
    parser.add_argument("-t", "--tag", required=True, metavar="IMAGE", help="the image to build")
    parser.add_argument("--target", metavar="STAGE", help="the stage to build (default: the last)")
    parser.add_argument(
        "--build-arg",
        dest="build_args",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a build argument (repeatable)",
    )
    parser.add_argument(
        "--export",
        dest="exports",
        action="append",
        default=[],
        metavar="STAGE:/PATH=DIR",
        help="copy a path of a built stage to DIR",
    )
    parser.add_argument(
        "--registry",
        metavar="HOST/REPO",
        help="cache stage images in this registry instead of the store",
    )
    parser.add_argument(
        "--docker",
        metavar="PATH",
        help="the docker client to use (default: $CI_INTEGRATION_DOCKER, docker)",
    )
    parser.add_argument(
        "--builder",
        default="auto",
        choices=["auto", "buildx", "buildkit", "legacy"],
        help="how to build (default: the best the client can do)",
    )
    parser.add_argument(
        "--no-mount-cache",
        dest="mount_cache",
        action="store_false",
        help="do not carry RUN --mount=type=cache folders across jobs",
    )
    parser.add_argument(
        "--mount-cache-exclude",
        dest="mount_exclude",
        action="append",
        default=[],
        metavar="ID",
        help="leave this cache mount out (repeatable)",
    )
    parser.add_argument(
        "--mount-helper-image",
        metavar="IMAGE",
        help="image with a shell to copy cache mounts in and out"
        " (default: the base image of the stage that uses the mount)",
    )
    parser.add_argument(
        "--always-build",
        action="store_true",
        help="run the builder even when the cache holds the target image built from"
        " these very inputs (by default that image is the result)",
    )
    parser.add_argument("--read-only", action="store_true", help="restore the cache, never save")
    options.add_store_options(parser)
    options.add_output_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, job: Job) -> int:
    env, cwd, ci = job.env, job.cwd, job.ci
    build_context = (cwd / args.context).resolve()
    if not build_context.is_dir():
        raise UsageError(f"build context {args.context} is not a folder")
    dockerfile = (build_context / "Dockerfile") if args.file is None else (cwd / args.file)
    options = BuildOptions(
        context=build_context,
        dockerfile=dockerfile.resolve(),
        image=args.tag,
        target=args.target,
        build_args=_build_args(args.build_args, env),
        labels=image_labels(ci),
        exports=[Export.parse(text, cwd) for text in args.exports],
        strict=args.strict,
        read_only=args.read_only or ci.read_only,
        mount_cache=args.mount_cache,
        mount_exclude=args.mount_exclude,
        mount_helper_image=args.mount_helper_image,
        always_build=args.always_build,
    )
    # Bad input fails here, before the engine is asked anything.
    dockerfiles.load(options.dockerfile, options.build_args).stages_for(options.target)
    engine = Engine(env)
    try:
        # The client's part of the facts is asked while a target that comes whole loads.
        probe = engine.probe(args.docker or env.get(DOCKER_ENV) or "docker", env)
        repository = split_reference(args.tag)[0]
        images: CacheBackend
        if args.registry:
            images = RegistryCache(engine, args.registry, ci.scope_chain)
        else:
            store = job.store(args.store)
            if store.read_only and not options.read_only:
                log.info("saving nothing: this job is read-only (%s)", store.why)
                options = dataclasses.replace(options, read_only=True)
            images = StoreCache(engine, store, repository)
        chosen: list[CacheBackend] = []  # the backends toolchain() made, to close

        def toolchain() -> Toolchain:
            facts = probe.result()
            builder = pick_builder(args.builder, facts, env, engine)
            cache: CacheBackend = images
            if isinstance(images, StoreCache) and facts.mechanism(builder.name) == BUILDKIT_CACHE:
                cache = BuildKitCache(images)
            log.info("engine: %s", facts.describe())
            log.info(
                "%s: builder %s, the cache through %s, cache scopes %s",
                args.tag,
                builder.name,
                cache.mechanism,
                " > ".join(ci.scope_chain),
            )
            chosen.append(cache)
            return Toolchain(builder, cache, facts)

        def show(line: str) -> None:
            # Through the log, so that a secret a build step prints is masked too.
            log.info("%s", line)

        try:
            result = build(options, engine, images, toolchain, show)
        except BuildFailed as failure:
            _publish(failure.report, args, env)
            raise
        finally:
            for cache in chosen:
                cache.close()
        _publish(result, args, env)
    finally:
        engine.close()
    return 0


def image_labels(job: context.CIContext) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.created": datetime.datetime.now(datetime.timezone.utc)
        .replace(microsecond=0)
        .isoformat(),
    }
    if job.commit:
        labels["org.opencontainers.image.revision"] = job.commit
    if job.repository:
        source = job.repository
        if job.provider is context.Provider.GITHUB_ACTIONS and "://" not in source:
            source = f"https://github.com/{source}"
        labels["org.opencontainers.image.source"] = source
    if job.build_url:
        labels["io.ci-integration.build-url"] = job.build_url
    return labels


def _build_args(values: list[str], env: Mapping[str, str]) -> dict[str, str]:
    """``K=V``, or ``K`` alone to take K from the environment, as docker does."""
    args = {}
    for item in values:
        name, equals, value = item.partition("=")
        if not name:
            raise UsageError(f"bad --build-arg {item!r}: write NAME=VALUE")
        if not equals:
            if name not in env:
                continue
            value = env[name]
        args[name] = value
    return args


def _publish(result: BuildReport, args: argparse.Namespace, env: Mapping[str, str]) -> None:
    header = ["stage", "cache", "from", "steps cached", "built in", "saved", "uploaded"]
    rows = [
        [
            stage.stage,
            stage.restored,
            stage.restored_from,
            f"{stage.cached_steps}/{len(stage.steps)}",
            f"{stage.seconds:.1f} s",
            stage.saved,
            human_bytes(stage.uploaded_bytes) if stage.saved == Saved.UPLOADED else "",
        ]
        for stage in result.stages
    ]
    print(report.redact(report.text_table(header, rows)), file=sys.stderr)
    mount_header = ["cache mount", "cache", "from", "ccache", "saved", "uploaded"]
    mount_rows = [
        [
            mount.id,
            mount.restored,
            mount.restored_from,
            mount.ccache.describe() if mount.ccache else "",
            mount.saved,
            human_bytes(mount.uploaded_bytes) if mount.saved == Saved.UPLOADED else "",
        ]
        for mount in result.mounts
    ]
    if mount_rows:
        print(report.redact(report.text_table(mount_header, mount_rows)), file=sys.stderr)
    if env.get("GITHUB_STEP_SUMMARY"):
        summary = f"### ci-integration build `{result.image}` ({result.builder})\n\n"
        if result.engine:
            summary += f"{EngineFacts.from_dict(result.engine).describe()}; cache through"
            summary += f" {result.cache_mechanism}\n\n"
        if result.whole:
            summary += "Unchanged inputs: the image came whole from the cache, no stage built.\n\n"
        summary += report.markdown_table(header, rows)
        if mount_rows:
            summary += "\n" + report.markdown_table(mount_header, mount_rows)
        report.append_step_summary(env["GITHUB_STEP_SUMMARY"], summary)
    document = dataclasses.asdict(result)
    if args.json:
        print(report.redact(json.dumps(document, indent=2)))
    if args.github_output:
        path = env.get("GITHUB_OUTPUT")
        if not path:
            raise UsageError("--github-output needs GITHUB_OUTPUT: run it in a GitHub Actions step")
        all_cached = all(s.cached_steps == len(s.steps) for s in result.stages)
        report.write_github_output(
            path,
            {
                "image-id": result.image_id or "",
                "all-cached": "true" if all_cached else "false",
                "report": json.dumps(document),
            },
        )
