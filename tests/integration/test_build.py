"""``ci-integration build`` on the real engine, with BuildKit (Debian's docker 20.10
client, DOCKER_BUILDKIT=1) and with the legacy builder (Engine API)."""

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

DOCKERFILE = """\
FROM {base} AS base
RUN echo base > /base.txt
COPY deps.txt /deps.txt
FROM base AS builder
COPY src/ /src/
RUN cat /src/*.c > /built.txt
FROM {base} AS final
COPY --from=builder /built.txt /app/built.txt
RUN echo final > /app/final.txt
COPY app.txt /app/app.txt
"""
IMAGE = "ci-integration-test/app:1"
BUILDERS = ["buildkit", "legacy"]


@pytest.fixture
def project(tmp_path, docker_client) -> Path:
    """A three-stage project on a fresh engine that holds only the base image."""
    wipe(docker_client)
    busybox_image = base_images.busybox_image(docker_client)
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text(DOCKERFILE.format(base=busybox_image))
    (root / "deps.txt").write_text("deps 1\n")
    (root / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (root / "app.txt").write_text("app 1\n")
    (root / ".dockerignore").write_text("*.log\n")
    return root


def job_env(base_env, tmp_path, branch="main") -> dict[str, str]:
    return {
        **base_env,
        "CI_INTEGRATION_PROVIDER": "local",
        "CI_INTEGRATION_BRANCH": branch,
        "CI_INTEGRATION_DEFAULT_BRANCH": "main",
        "CI_INTEGRATION_CACHE_DIR": str(tmp_path / "store"),
    }


def run_build(project: Path, env, builder: str, *extra: str, capsys, expect: int = 0) -> dict:
    """One job: the CLI in-process with the /usr/bin/docker client; its JSON report."""
    capsys.readouterr()
    code = main(
        ["build", str(project), "-t", IMAGE, "--builder", builder, "--docker", "/usr/bin/docker",
         "--json", *extra],
        env=env,
    )  # fmt: skip
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


STEPS = {"base": 2, "builder": 2, "final": 3}


def all_cached(report: dict) -> bool:
    """Every step of every stage reported, and every one CACHED."""
    counts = {s["stage"]: len(s["steps"]) for s in report["stages"]}
    assert counts == STEPS, counts
    return all(step["cached"] for s in report["stages"] for step in s["steps"])


@pytest.mark.parametrize("builder", BUILDERS)
def test_a_wiped_engine_rebuilds_every_step_from_the_store(
    builder, project, tmp_path, base_env, docker_client, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    env = job_env(base_env, tmp_path)
    first = run_build(project, env, builder, capsys=capsys)
    assert [s["saved"] for s in first["stages"]] == ["uploaded"] * 3
    assert not all_cached(first)
    wipe(docker_client)

    second = run_build(project, env, builder, capsys=capsys)
    assert all_cached(second), second
    assert [s["restored"] for s in second["stages"]] == ["exact"] * 3
    assert [s["saved"] for s in second["stages"]] == ["unchanged"] * 3
    output = docker_client.containers.run(IMAGE, ["cat", "/app/built.txt", "/app/app.txt"],
                                          remove=True)  # fmt: skip
    assert output == b"int main(void) { return 0; }\napp 1\n"


@pytest.mark.parametrize("builder", BUILDERS)
def test_a_feature_branch_starts_from_the_default_branch(
    builder, project, tmp_path, base_env, docker_client, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    run_build(project, job_env(base_env, tmp_path, "main"), builder, capsys=capsys)
    wipe(docker_client)
    feature = run_build(project, job_env(base_env, tmp_path, "feature/x"), builder, capsys=capsys)
    assert {s["restored_from"] for s in feature["stages"]} == {"branch-main"}
    assert all_cached(feature)
    # The same layers are recorded in the branch's own scope, without uploading.
    assert [s["saved"] for s in feature["stages"]] == ["recorded"] * 3
    store = LocalStore(tmp_path / "store")
    assert len(store.list_entries("branch-main")) == 4  # three stages and the base image


@pytest.mark.parametrize("builder", BUILDERS)
def test_a_failing_last_stage_still_saves_the_stages_before_it(
    builder, project, tmp_path, base_env, docker_client, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN exit 3\n")
    env = job_env(base_env, tmp_path)
    report = run_build(project, env, builder, capsys=capsys, expect=5)
    assert report["failed_stage"] == "final"
    assert [s["saved"] for s in report["stages"]] == ["uploaded", "uploaded", "not saved"]
    wipe(docker_client)
    (project / "Dockerfile").write_text(DOCKERFILE.format(base=base_images.BUSYBOX_TAG))
    fixed = stages(run_build(project, env, builder, capsys=capsys))
    assert fixed["base"]["restored"] == fixed["builder"]["restored"] == "exact"
    assert all(step["cached"] for step in fixed["builder"]["steps"])


@pytest.mark.parametrize("builder", BUILDERS)
def test_a_one_line_change_moves_only_the_new_layer(
    builder, project, tmp_path, base_env, docker_client, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    env = job_env(base_env, tmp_path)
    run_build(project, env, builder, capsys=capsys)
    (project / "app.txt").write_text("app 2\n")
    wipe(docker_client)
    changed = stages(run_build(project, env, builder, capsys=capsys))
    assert changed["base"]["saved"] == changed["builder"]["saved"] == "unchanged"
    final = changed["final"]
    assert final["restored"] == "partial" and final["saved"] == "uploaded"
    assert final["uploaded_layers"] == 1
    assert final["uploaded_bytes"] < 10_000
    assert [step["cached"] for step in final["steps"]] == [True, True, False]


def test_inline_cache_survives_four_generations(
    project, tmp_path, base_env, docker_client, capsys, monkeypatch
):
    """TESTBED.md's trap: an all-CACHED rebuild saved over its source loses cache links."""
    monkeypatch.chdir(tmp_path)
    env = job_env(base_env, tmp_path)
    run_build(project, env, "buildkit", capsys=capsys)
    for _generation in (2, 3):
        wipe(docker_client)
        assert all_cached(run_build(project, env, "buildkit", capsys=capsys))
    (project / "app.txt").write_text("app 4\n")
    wipe(docker_client)
    fourth = stages(run_build(project, env, "buildkit", capsys=capsys))
    assert all(step["cached"] for step in fourth["base"]["steps"] + fourth["builder"]["steps"])
    assert [step["cached"] for step in fourth["final"]["steps"]] == [True, True, False]


@pytest.mark.parametrize("builder", BUILDERS)
def test_export_a_file_from_a_stage(
    builder, project, tmp_path, base_env, docker_client, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    report = run_build(project, job_env(base_env, tmp_path), builder,
                       "--export", "builder:/src=out/src", "--export", "final:/app/final.txt=out",
                       capsys=capsys)  # fmt: skip
    assert report["exported_files"] == 2
    assert (tmp_path / "out" / "src" / "main.c").read_text().startswith("int main")
    assert (tmp_path / "out" / "final.txt").read_text() == "final\n"
    assert docker_client.containers.list(all=True) == []


@pytest.fixture
def registry(tmp_path, private_engine):
    """Debian's docker-registry on a free port of the engine's own 127.0.0.1 (which
    the engine treats as an insecure registry), stopped by its pid after the test."""
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: info, accesslog: {disabled: true}}\n"  # info: the port it listens on
        f"storage: {{filesystem: {{rootdirectory: '{tmp_path / 'registry'}'}}}}\n"
        "http: {addr: '127.0.0.1:0'}\n"
    )
    binary = shutil.which("docker-registry") or "docker-registry"
    with daemons.running([*private_engine.in_netns, binary, "serve", str(config)],
                         tmp_path / "registry.log", r"listening on (127\.0\.0\.1:\d+)",
                         what="docker-registry") as found:  # fmt: skip
        yield f"{found[1]}/cache/app"


@pytest.mark.parametrize("builder", BUILDERS)
def test_registry_mode(builder, project, tmp_path, base_env, docker_client, capsys, monkeypatch,
                       registry):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    env = job_env(base_env, tmp_path)
    first = run_build(project, env, builder, "--registry", registry, capsys=capsys)
    assert [s["saved"] for s in first["stages"]] == ["uploaded"] * 3
    forget_tags(docker_client, (IMAGE.split(":")[0], "127.0.0.1"))
    second = run_build(project, env, builder, "--registry", registry, capsys=capsys)
    assert [s["restored"] for s in second["stages"]] == ["pulled"] * 3
    assert all_cached(second)
    assert [s["saved"] for s in second["stages"]] == ["unchanged"] * 3
    feature = run_build(project, job_env(base_env, tmp_path, "feature/y"), builder,
                        "--registry", registry, capsys=capsys)  # fmt: skip
    assert {s["restored_from"] for s in feature["stages"]} == {"branch-main"}
