"""``run --ccache``: compiles at run time keep their ccache across jobs through the
store, and the run reports its own hit rate."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.support import base_images
from tests.support.c_sources import brotli_sources

# One worker imports the large base image into its engine.
pytestmark = [pytest.mark.engine, pytest.mark.xdist_group("debian")]


def job(workspace, env) -> str:
    argv = [sys.executable, "-m", "ci_integration", "run", "--ccache", ".ccache",
            base_images.DEBIAN_TAG, "--", "make", "-j2", "CC=ccache gcc"]  # fmt: skip
    result = subprocess.run(argv, cwd=workspace, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_run_ccache_across_jobs(engine, tmp_path, base_env):
    base_images.debian_image(engine.client)
    env = {**base_env, **engine.env, "CI_INTEGRATION_PROVIDER": "local",
           "CI_INTEGRATION_BRANCH": "main",
           "CI_INTEGRATION_CACHE_DIR": str(tmp_path / "store")}  # fmt: skip
    first = tmp_path / "job1"
    shutil.copytree(brotli_sources(), first)
    log = job(first, env)
    files = len(list(first.glob("c/*/*.o")))
    assert f"ccache this run: 0 hits, {files} misses" in log
    assert (first / ".ccache").is_dir()

    # A new workspace: a fresh checkout with one real change, and no .ccache folder.
    second = tmp_path / "job2"
    shutil.copytree(brotli_sources(), second)
    changed = second / "c" / "enc" / "encode.c"
    changed.write_text(changed.read_text() + "\nint ci_integration_changed = 1;\n")
    log = job(second, env)
    hits, misses = map(int, re.search(r"ccache this run: (\d+) hits, (\d+) misses", log).groups())
    assert (hits, misses) == (files - 1, 1)
    owners = subprocess.run(["find", str(second / ".ccache"), "-not", "-user", str(0)],
                            capture_output=True, text=True).stdout  # fmt: skip
    assert owners == ""  # everything belongs to the caller (root here)
