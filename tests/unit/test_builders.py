"""Builder choice, command lines and progress parsing, without an engine."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ci_integration.engine import facts as engine_facts
from ci_integration.engine.facts import BUILDKIT_CACHE, STAGE_IMAGES, EngineFacts
from ci_integration.errors import UsageError
from ci_integration.images import dockerfile as dockerfiles
from ci_integration.images.build import SourceRule
from ci_integration.images.builders import (
    BuildRequest,
    CliBuilder,
    LegacyBuilder,
    _BuildKitProgress,
    pick_builder,
)
from ci_integration.images.exports import Export
from ci_integration.images.registry import MAX_TAG_LENGTH, RegistryCache
from ci_integration.images.stagefile import stage_dockerfile

# As Debian's docker 20.10 prints it with DOCKER_BUILDKIT=1 --progress=plain.
BUILDKIT_LOG = """\
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s
#4 [deps 1/3] FROM docker.io/library/base:1
#4 DONE 0.0s
#5 [deps 2/3] RUN make deps
#5 CACHED
#7 [deps 3/3] COPY versions.txt /opt/versions.txt
#7 DONE 0.4s
#8 [app 2/2] RUN ./build.sh
#8 1.234 compiling...
#8 DONE 12.5s
#9 exporting to image
#9 DONE 0.1s
"""


def test_buildkit_progress_gives_steps_cached_and_times():
    progress = _BuildKitProgress()
    for line in BUILDKIT_LOG.splitlines():
        progress.feed(line)
    summary = [(s.stage, s.instruction, s.cached, s.seconds) for s in progress.steps]
    assert summary == [
        ("deps", "RUN make deps", True, 0.0),
        ("deps", "COPY versions.txt /opt/versions.txt", False, 0.4),
        ("app", "RUN ./build.sh", False, 12.5),
    ]


def request(**changes) -> BuildRequest:
    values = dict(
        context=Path("/ctx"), dockerfile=Path("/ctx/Dockerfile"), target="app",
        tags=("app:stage-app", "app:1"), build_args={"V": "1"},
        cache_from=("app:stage-deps",), labels={"org.opencontainers.image.revision": "abc"},
    )  # fmt: skip
    values.update(changes)
    return BuildRequest(**values)


def test_cli_command_lines(tmp_path):
    argv = CliBuilder("/usr/bin/docker", {}, buildx=False).command(request(), tmp_path / "iid")
    assert argv[:2] == ["/usr/bin/docker", "build"] and argv[-1] == "/ctx"
    joined = " ".join(argv)
    for part in ["--target app", "--build-arg BUILDKIT_INLINE_CACHE=1", "--build-arg V=1",
                 "--cache-from app:stage-deps", "-t app:stage-app", "-t app:1",
                 "--label org.opencontainers.image.revision=abc", "--progress=plain",
                 "-f /ctx/Dockerfile"]:  # fmt: skip
        assert part in joined
    buildx = CliBuilder("docker", {}, buildx=True).command(request(), tmp_path / "iid")
    assert buildx[:4] == ["docker", "buildx", "build", "--load"]


def facts(client_version: str | None, buildx: str | None = None, driver: str | None = None,
          store: str = "classic") -> EngineFacts:  # fmt: skip
    return EngineFacts("docker", client_version, "28.5.2", "1.51", store, buildx, driver)


def test_pick_builder_by_what_the_client_can_do(base_env):
    engine = object()
    assert pick_builder("auto", facts("20.10.24"), base_env, engine).name == "buildkit"
    assert pick_builder("legacy", facts("20.10.24"), base_env, engine).name == "legacy"
    # A 23+ client without buildx: only the legacy builder.
    assert isinstance(pick_builder("auto", facts("28.2.2"), base_env, engine), LegacyBuilder)
    with pytest.raises(UsageError, match="only through buildx"):
        pick_builder("buildkit", facts("28.2.2"), base_env, engine)
    with pytest.raises(UsageError, match="no buildx plugin"):
        pick_builder("buildx", facts("20.10.24"), base_env, engine)
    with_buildx = facts("28.5.2", "0.29.1", "docker")
    assert pick_builder("auto", with_buildx, base_env, engine).name == "buildx"


@pytest.mark.parametrize(
    ("store", "builder", "driver", "mechanism"),
    [
        ("classic", "buildkit", None, STAGE_IMAGES),
        ("classic", "legacy", None, STAGE_IMAGES),
        ("classic", "buildx", "docker", STAGE_IMAGES),
        ("classic", "buildx", "docker-container", BUILDKIT_CACHE),
        ("classic", "buildx", "remote", BUILDKIT_CACHE),
        ("containerd", "buildx", "docker", BUILDKIT_CACHE),
        ("containerd", "legacy", None, STAGE_IMAGES),
    ],
)
def test_the_cache_mechanism_follows_the_image_store_and_the_buildx_driver(
    store, builder, driver, mechanism
):
    found = facts("28.5.2", "0.29.1" if driver else None, driver, store)
    assert found.mechanism(builder) == mechanism


@pytest.mark.skipif(not Path("/usr/bin/docker").exists(), reason="Debian's docker.io client")
def test_client_versions_as_the_clients_print_them(base_env):
    assert engine_facts.client_version("/usr/bin/docker", base_env).startswith("20.10.")
    newer = shutil.which("docker", path="/usr/local/bin")
    if newer:
        assert int(engine_facts.client_version(newer, base_env).split(".")[0]) >= 23
    with pytest.raises(UsageError, match="cannot run the docker client"):
        engine_facts.client_version("/nonexistent/docker", base_env)


def test_the_image_store_as_docker_info_says_it():
    classic = {"DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]]}
    containerd = {"DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
    assert engine_facts.image_store(classic) == "classic"
    assert engine_facts.image_store(containerd) == "containerd"
    assert engine_facts.image_store({"DriverStatus": None}) == "classic"


def test_unnamed_stages_get_names_for_target(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text("FROM a\nRUN x\nFROM b AS named\nCOPY --from=0 /x /y\nFROM c\nRUN y\n")
    (tmp_path / "Dockerfile.dockerignore").write_text("secret\n")
    parsed = dockerfiles.load(path, {})
    with stage_dockerfile(parsed, path, list(parsed.stages)) as (used, names):
        assert used != path
        assert used.read_text().splitlines()[0] == "FROM a AS ci-stage-0"
        assert used.read_text().splitlines()[4] == "FROM c AS ci-stage-2"
        assert names == {"0": "ci-stage-0", "named": "named", "2": "ci-stage-2"}
        assert (used.parent / "Dockerfile.dockerignore").read_text() == "secret\n"
    assert not used.exists()
    named = dockerfiles.parse("FROM a AS one\nFROM b AS two\n")
    with stage_dockerfile(named, path, list(named.stages)) as (used, _):
        assert used == path


def test_registry_tags_stay_within_the_limit():
    cache = RegistryCache(object(), "127.0.0.1:5000/cache/app", ["branch-" + "x" * 120])
    ref = cache.cache_ref("builder", cache.scope_chain[0])
    tag = ref.rsplit(":", 1)[1]
    assert len(tag) <= MAX_TAG_LENGTH and tag.startswith("cache-builder-branch-")
    assert (
        cache.cache_ref("builder", "branch-main")
        == "127.0.0.1:5000/cache/app:cache-builder-branch-main"
    )


@pytest.mark.parametrize("text", ["app", "app:/x", "app:relative=out", ":/x=out", "app:/x="])
def test_bad_exports_are_usage_errors(text, tmp_path):
    with pytest.raises(UsageError, match="STAGE:/absolute/path/in/image=HOST_DIR"):
        Export.parse(text, tmp_path)


def test_export_parse(tmp_path):
    export = Export.parse("build:/out/./dist/=artifacts", tmp_path)
    assert (export.stage, export.path, export.destination) == ("build", "/out/dist",
                                                               tmp_path / "artifacts")  # fmt: skip


SOURCES_DOCKERFILE = """\
FROM busybox AS base
FROM base AS builder
FROM builder AS check
FROM base AS docs
FROM busybox AS final
COPY --from=check / /c
COPY --from=docs / /d
"""


@pytest.mark.parametrize(
    ("stage", "present", "picked"),
    [
        ("check", ["base", "builder", "check"], ["check"]),  # its own, alone
        ("check", ["base", "builder"], ["builder"]),  # builder's holds base's steps
        # final's own is missing: check's and docs' chains, each once, never base's
        ("final", ["base", "builder", "check", "docs"], ["check", "docs"]),
        ("final", ["base", "docs"], ["docs"]),
        ("docs", ["builder", "check"], []),  # none of them is one docs needs
    ],
)
def test_a_buildkit_build_takes_each_chain_of_stages_from_one_source(stage, present, picked):
    rule = SourceRule(dockerfiles.parse(SOURCES_DOCKERFILE))
    sources = {ref: f"app:stage-{ref}" for ref in present}
    assert rule.pick(stage, sources) == tuple(f"app:stage-{ref}" for ref in picked)


@pytest.mark.parametrize(
    "engine",
    [facts("28.2.2", "0.29.1", "docker", "containerd"), facts(None), facts("20.10.24", "0.7.1")],
)
def test_the_facts_of_a_build_report_read_back_as_they_were(engine):
    # The step summary describes the engine from the report's JSON form.
    again = EngineFacts.from_dict(json.loads(json.dumps(engine.as_dict())))
    assert again == engine and again.describe() == engine.describe()
