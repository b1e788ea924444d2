"""``ci-integration build`` on every engine of the matrix (tests/integration/conftest.py),
with each of its builders: BuildKit (Docker 20.10's client with DOCKER_BUILDKIT=1,
buildx on the newer ones) and the legacy builder (Engine API)."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import docker.errors
import pytest

from ci_integration.cli import main
from ci_integration.store.local import LocalStore
from tests.support import base_images, daemons

pytestmark = pytest.mark.engine

# Four stages: a folder COPY in a stage built FROM another stage, a stage built FROM
# that one, and a final stage on the base image taking files from two of them.
DOCKERFILE = """\
FROM {base} AS base
RUN echo base > /base.txt
COPY deps.txt /deps.txt
FROM base AS builder
COPY src/ /src/
RUN cat /src/*.c > /built.txt
FROM builder AS check
RUN test -s /built.txt && echo checked > /check.txt
FROM {base} AS final
COPY --from=builder /built.txt /app/built.txt
COPY --from=check /check.txt /app/check.txt
RUN echo final > /app/final.txt
COPY app.txt /app/app.txt
"""
IMAGE = "ci-integration-test/app:1"


@pytest.fixture
def project(tmp_path, engine) -> Path:
    """A three-stage project on a fresh engine that holds only the base image."""
    wipe(engine.client)
    busybox_image = base_images.busybox_image(engine.client)
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text(DOCKERFILE.format(base=busybox_image))
    (root / "deps.txt").write_text("deps 1\n")
    (root / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (root / "app.txt").write_text("app 1\n")
    (root / ".dockerignore").write_text("*.log\n")
    return root


def job_env(base_env, tmp_path, engine, branch="main") -> dict[str, str]:
    """A job on ``engine``, with its own client (``CI_INTEGRATION_DOCKER``)."""
    return {
        **base_env,
        **engine.env,
        "CI_INTEGRATION_DOCKER": engine.docker,
        "CI_INTEGRATION_PROVIDER": "local",
        "CI_INTEGRATION_BRANCH": branch,
        "CI_INTEGRATION_DEFAULT_BRANCH": "main",
        "CI_INTEGRATION_CACHE_DIR": str(tmp_path / "store"),
    }


def run_build(project: Path, env, builder: str, *extra: str, capsys, expect: int = 0) -> dict:
    """One job: the CLI in-process, with the client the job's env names; its JSON report."""
    capsys.readouterr()
    code = main(["build", str(project), "-t", IMAGE, "--builder", builder, "--json", *extra],
                env=env)  # fmt: skip
    out = capsys.readouterr().out
    assert code == expect, out
    return json.loads(out) if out.strip() else {}


def wipe(client) -> None:
    """A fresh agent: no container, no image, no build cache."""
    for container in client.containers.list(all=True):
        container.remove(force=True)
    for _ in range(10):  # children first: a parent goes once its children are gone
        images = client.images.list(all=True)
        if not images:
            break
        for image in images:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id, force=True)
    client.api.prune_builds(all=True)
    assert client.images.list(all=True) == []


def forget_tags(client, prefixes: tuple[str, ...]) -> None:
    """The engine forgets the images tagged so, and all build cache. By tag, never by
    id: an id shared with an image that has children is refused (409), a tag is not."""
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(prefixes):
                client.images.remove(tag, force=True)
    client.api.prune_builds(all=True)


def stages(report: dict) -> dict[str, dict]:
    return {stage["stage"]: stage for stage in report["stages"]}


STEPS = {"base": 2, "builder": 2, "check": 1, "final": 4}
STAGES = len(STEPS)


def uncached(report: dict) -> list[str]:
    """The steps not CACHED (``stage: instruction``), once every step of every stage
    is known to be reported."""
    counts = {s["stage"]: len(s["steps"]) for s in report["stages"]}
    assert counts == STEPS, counts
    return [f"{s['stage']}: {step['instruction']}" for s in report["stages"]
            for step in s["steps"] if not step["cached"]]  # fmt: skip


def test_a_wiped_engine_rebuilds_every_step_from_the_store(
    builder, project, tmp_path, base_env, engine, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    env = job_env(base_env, tmp_path, engine)
    first = run_build(project, env, builder, capsys=capsys)
    assert [s["saved"] for s in first["stages"]] == ["uploaded"] * STAGES
    assert uncached(first) != []
    # What the engine said of itself, and the mechanism picked for it.
    containerd = engine.kind.containerd_store
    assert first["engine"]["image_store"] == ("containerd" if containerd else "classic")
    assert first["engine"]["server_version"].startswith(engine.name.split("-")[0] + ".")
    assert first["cache_mechanism"] == ("buildkit-cache" if containerd else "stage-images")
    assert (first["engine"]["buildx_driver"] is None) == (engine.name == "20.10")
    wipe(engine.client)

    # Unchanged inputs: the target's image comes whole, with this job's labels.
    second = run_build(project, {**env, "CI_INTEGRATION_COMMIT": "b" * 40}, builder,
                       "--export", "final:/app/app.txt=out", capsys=capsys)  # fmt: skip
    assert second["whole"] and not any(s["built"] for s in second["stages"])
    assert (tmp_path / "out" / "app.txt").read_text() == "app 1\n"
    assert uncached(second) == []
    assert [s["restored"] for s in second["stages"]] == ["exact"] * STAGES
    assert [s["saved"] for s in second["stages"]] == ["unchanged"] * STAGES
    output = engine.client.containers.run(IMAGE, ["cat", "/app/built.txt", "/app/app.txt"],
                                          remove=True)  # fmt: skip
    assert output == b"int main(void) { return 0; }\napp 1\n"
    labels = engine.client.images.get(IMAGE).labels
    assert labels["org.opencontainers.image.revision"] == "b" * 40
    assert engine.client.images.get(IMAGE).id == second["image_id"]
    wipe(engine.client)

    # The builder run all the same finds every step in the cache.
    third = run_build(project, env, builder, "--always-build", capsys=capsys)
    assert not third["whole"] and all(s["built"] for s in third["stages"][-1:])
    assert uncached(third) == []
    assert [s["saved"] for s in third["stages"]] == ["unchanged"] * STAGES


def test_a_feature_branch_starts_from_the_default_branch(
    builder, project, tmp_path, base_env, engine, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    run_build(project, job_env(base_env, tmp_path, engine, "main"), builder, capsys=capsys)
    wipe(engine.client)
    feature = run_build(
        project, job_env(base_env, tmp_path, engine, "feature/x"), builder, capsys=capsys
    )
    assert {s["restored_from"] for s in feature["stages"]} == {"branch-main"}
    assert uncached(feature) == []
    # The same layers are recorded in the branch's own scope, without uploading.
    assert [s["saved"] for s in feature["stages"]] == ["recorded"] * STAGES
    store = LocalStore(tmp_path / "store")
    # And the base image; on the containerd store, the target's image beside its cache.
    extra = 2 if engine.kind.containerd_store else 1
    assert len(store.list_entries("branch-main")) == STAGES + extra


def test_a_failing_last_stage_still_saves_the_stages_before_it(
    builder, project, tmp_path, base_env, engine, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN exit 3\n")
    env = job_env(base_env, tmp_path, engine)
    report = run_build(project, env, builder, capsys=capsys, expect=5)
    assert report["failed_stage"] == "final"
    assert [s["saved"] for s in report["stages"]] == ["uploaded"] * (STAGES - 1) + ["not saved"]
    wipe(engine.client)
    (project / "Dockerfile").write_text(DOCKERFILE.format(base=base_images.BUSYBOX_TAG))
    fixed = run_build(project, env, builder, capsys=capsys)
    restored = {stage["stage"]: stage["restored"] for stage in fixed["stages"]}
    assert restored == {"base": "exact", "builder": "exact", "check": "exact", "final": "miss"}
    assert [step for step in uncached(fixed) if not step.startswith("final:")] == []


def test_a_one_line_change_moves_only_the_new_layer(
    builder, project, tmp_path, base_env, engine, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    env = job_env(base_env, tmp_path, engine)
    run_build(project, env, builder, capsys=capsys)
    (project / "app.txt").write_text("app 2\n")
    wipe(engine.client)
    changed = stages(run_build(project, env, builder, capsys=capsys))
    assert {changed[stage]["saved"] for stage in ("base", "builder", "check")} == {"unchanged"}
    final = changed["final"]
    assert final["restored"] == "partial" and final["saved"] == "uploaded"
    assert final["uploaded_layers"] == 1
    # The layer and listings; the containerd store's target image adds its own listing,
    # config and OCI layout (attestations among it) to its cache export's.
    assert final["uploaded_bytes"] < (20_000 if engine.kind.containerd_store else 10_000)
    assert [step["cached"] for step in final["steps"]] == [True, True, True, False]


def test_the_cache_survives_four_generations(
    project, tmp_path, base_env, engine, buildkit_builder, capsys, monkeypatch
):
    """TESTBED.md's trap: an all-CACHED rebuild saved over its source loses cache links.
    And Docker 28's: a step matched in another stage's cache source loses the links to
    the steps after it, now and then (CacheBackend.cache_sources)."""
    monkeypatch.chdir(tmp_path)
    env = job_env(base_env, tmp_path, engine)
    run_build(project, env, buildkit_builder, capsys=capsys)
    for _generation in (2, 3):
        wipe(engine.client)
        # The builder run on unchanged inputs, whose result is saved: the trap's case.
        rebuilt = run_build(project, env, buildkit_builder, "--always-build", capsys=capsys)
        assert uncached(rebuilt) == []
    (project / "app.txt").write_text("app 4\n")
    wipe(engine.client)
    fourth = stages(run_build(project, env, buildkit_builder, capsys=capsys))
    unchanged = fourth["base"]["steps"] + fourth["builder"]["steps"] + fourth["check"]["steps"]
    assert all(step["cached"] for step in unchanged)
    assert [step["cached"] for step in fourth["final"]["steps"]] == [True, True, True, False]


def test_export_a_file_from_a_stage(
    builder, project, tmp_path, base_env, engine, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    report = run_build(project, job_env(base_env, tmp_path, engine), builder,
                       "--export", "builder:/src=out/src", "--export", "final:/app/final.txt=out",
                       capsys=capsys)  # fmt: skip
    assert report["exported_files"] == 2
    assert (tmp_path / "out" / "src" / "main.c").read_text().startswith("int main")
    assert (tmp_path / "out" / "final.txt").read_text() == "final\n"
    assert engine.client.containers.list(all=True) == []
    # A file of a stage other than the target needs that stage: it is built, not whole.
    wipe(engine.client)
    (tmp_path / "out" / "src" / "main.c").unlink()
    again = run_build(project, job_env(base_env, tmp_path, engine), builder,
                      "--export", "builder:/src=out/src", capsys=capsys)  # fmt: skip
    assert not again["whole"] and uncached(again) == []
    assert (tmp_path / "out" / "src" / "main.c").read_text().startswith("int main")


@pytest.fixture
def registry(tmp_path, engine):
    """Debian's docker-registry on a free port of the engine's own 127.0.0.1 (which
    the engine treats as an insecure registry), stopped by its pid after the test."""
    if engine.private is None:
        pytest.skip("needs a private Docker engine (root, dockerd)")
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: info, accesslog: {disabled: true}}\n"  # info: the port it listens on
        f"storage: {{filesystem: {{rootdirectory: '{tmp_path / 'registry'}'}}}}\n"
        "http: {addr: '127.0.0.1:0'}\n"
    )
    binary = shutil.which("docker-registry") or "docker-registry"
    with daemons.running([*engine.private.in_netns, binary, "serve", str(config)],
                         tmp_path / "registry.log", r"listening on (127\.0\.0\.1:\d+)",
                         what="docker-registry") as found:  # fmt: skip
        yield f"{found[1]}/cache/app"


def test_registry_mode(builder, project, tmp_path, base_env, engine, capsys, monkeypatch,
                       registry):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    env = job_env(base_env, tmp_path, engine)
    first = run_build(project, env, builder, "--registry", registry, capsys=capsys)
    assert [s["saved"] for s in first["stages"]] == ["uploaded"] * STAGES
    forget_tags(engine.client, (IMAGE.split(":")[0], "127.0.0.1"))
    second = run_build(project, env, builder, "--registry", registry, capsys=capsys)
    assert [s["restored"] for s in second["stages"]] == ["pulled"] * STAGES
    assert uncached(second) == []
    assert [s["saved"] for s in second["stages"]] == ["unchanged"] * STAGES
    feature = run_build(project, job_env(base_env, tmp_path, engine, "feature/y"), builder,
                        "--registry", registry, capsys=capsys)  # fmt: skip
    assert {s["restored_from"] for s in feature["stages"]} == {"branch-main"}
