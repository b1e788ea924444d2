"""Every command that writes to the cache, run as the job of a pull request from a
fork on each engine of the matrix: it does its work (the image is built, the
container runs) and the store is left exactly as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci_integration.cli import main
from tests.support import base_images
from tests.unit.test_fork_jobs_write_nothing import FORK, stored_files

pytestmark = pytest.mark.engine


@pytest.fixture
def fork_job(tmp_path, base_env, engine, monkeypatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    return {**base_env, **engine.env, **FORK, "CI_INTEGRATION_DOCKER": engine.docker,
            "CI_INTEGRATION_CACHE_DIR": str(tmp_path / "store")}  # fmt: skip


@pytest.fixture
def busybox(engine) -> str:
    return base_images.busybox_image(engine.client)


def store_after(tmp_path: Path) -> list[str]:
    store = tmp_path / "store"
    return stored_files(store) if store.exists() else []


def test_image_save(fork_job, busybox, tmp_path):
    assert main(["image", "save", busybox], env=fork_job) == 0
    assert store_after(tmp_path) == []


def test_build(fork_job, busybox, tmp_path, engine, builder):
    project = tmp_path / "project"
    project.mkdir()
    (project / "Dockerfile").write_text(f"FROM {busybox} AS base\nRUN echo {builder} > /b\n"
                                        "FROM base\nRUN cat /b\n")  # fmt: skip
    tag = f"ci-integration-test/fork-{builder}:1"
    argv = ["build", str(project), "-t", tag, "--builder", builder, "--strict"]
    assert main(argv, env=fork_job) == 0
    assert engine.client.images.get(tag)  # built all the same
    assert store_after(tmp_path) == []


def test_run_with_a_ccache_folder(fork_job, busybox, tmp_path):
    argv = ["run", "--ccache", ".ccache", busybox, "--",
            "sh", "-c", 'echo object > "$CCACHE_DIR/entry"']  # fmt: skip
    assert main(argv, env=fork_job) == 0
    assert (tmp_path / ".ccache" / "entry").read_text() == "object\n"
    assert store_after(tmp_path) == []
