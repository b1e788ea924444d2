"""Cache mounts across jobs: Brotli's C library compiled through ccache in a
``RUN --mount=type=cache`` step, on a Debian image made with mmdebstrap."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import BUILDERS
from tests.integration.test_build import run_build, wipe
from tests.support import base_images
from tests.support.c_sources import brotli_sources

# One worker imports the large base image into its engine.
pytestmark = [pytest.mark.engine, pytest.mark.xdist_group("debian")]

DOCKERFILE = """\
FROM {base} AS build
ENV CCACHE_DIR=/root/.ccache
COPY c/ /src/c/
COPY Makefile /src/Makefile
RUN --mount=type=cache,id=ccache-brotli,target=/root/.ccache \\
    make -C /src -j2 CC="ccache gcc"
FROM build AS final
RUN ls /src/c/enc/*.o | wc -l > /objects.txt
"""


@pytest.fixture
def c_project(tmp_path, engine) -> Path:
    wipe(engine.client)
    base = base_images.debian_image(engine.client)
    root = tmp_path / "project"
    shutil.copytree(brotli_sources() / "c", root / "c")
    shutil.copy(brotli_sources() / "Makefile", root / "Makefile")
    (root / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    return root


def env_for(base_env, tmp_path, engine) -> dict[str, str]:
    return {**base_env, **engine.env, "CI_INTEGRATION_DOCKER": engine.docker,
            "CI_INTEGRATION_PROVIDER": "local", "CI_INTEGRATION_BRANCH": "main",
            "CI_INTEGRATION_CACHE_DIR": str(tmp_path / "store")}  # fmt: skip


def sources(project: Path) -> int:
    return sum(len(list((project / "c" / part).glob("*.c"))) for part in ("common", "dec", "enc"))


def compile_step(report: dict) -> dict:
    (build,) = [stage for stage in report["stages"] if stage["stage"] == "build"]
    (step,) = [step for step in build["steps"] if "make" in step["instruction"]]
    return step


def test_ccache_in_a_cache_mount_survives_a_wiped_engine(
    c_project, tmp_path, base_env, engine, buildkit_builder, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    env = env_for(base_env, tmp_path, engine)
    first = run_build(c_project, env, buildkit_builder, capsys=capsys)
    (mount,) = first["mounts"]
    assert mount["id"] == "ccache-brotli" and mount["restored"] == "miss"
    files = sources(c_project)
    assert mount["saved"] == "uploaded" and mount["ccache"]["misses"] == files

    # One source file changes for real (a comment would not reach the compiler).
    changed = c_project / "c" / "enc" / "encode.c"
    changed.write_text(changed.read_text() + "\nint ci_integration_changed = 1;\n")
    wipe(engine.client)
    second = run_build(c_project, env, buildkit_builder, capsys=capsys)
    (mount,) = second["mounts"]
    assert mount["restored"] == "exact"
    assert not compile_step(second)["cached"]
    ccache = mount["ccache"]
    assert ccache["hits"] + ccache["misses"] == files
    assert ccache["hits"] / files >= 0.9, ccache

    wipe(engine.client)
    # Unchanged: the image would come whole; the builder run all the same compiles nothing.
    third = run_build(c_project, env, buildkit_builder, "--always-build", capsys=capsys)
    assert all(step["cached"] for stage in third["stages"] for step in stage["steps"])
    assert third["mounts"][0]["ccache"]["hits"] == third["mounts"][0]["ccache"]["misses"] == 0


def test_mount_cache_off_and_excluded(
    c_project, tmp_path, base_env, engine, buildkit_builder, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    env = env_for(base_env, tmp_path, engine)
    dockerfile = c_project / "Dockerfile"
    # Keep it quick: a mount that only gets one file.
    dockerfile.write_text(
        f"FROM {base_images.DEBIAN_TAG} AS build\n"
        "RUN --mount=type=cache,id=small,target=/cache echo data > /cache/file\n"
        "RUN --mount=type=cache,id=other,target=/other echo more > /other/file\n"

    )  # fmt: skip
    off = run_build(c_project, env, buildkit_builder, "--no-mount-cache", capsys=capsys)
    assert off["mounts"] == []
    some = run_build(c_project, env, buildkit_builder, "--mount-cache-exclude", "other",
                     "--always-build", capsys=capsys)  # fmt: skip
    assert [m["id"] for m in some["mounts"]] == ["small"]
    if "legacy" in BUILDERS[engine.name]:  # it knows no RUN --mount: the build fails
        legacy = run_build(c_project, env, "legacy", "--always-build", capsys=capsys, expect=5)
        assert legacy["mounts"] == []
