"""Cache mounts across jobs: Brotli's C library compiled through ccache in a
``RUN --mount=type=cache`` step; job 2 runs on a wiped engine after one source
file changed, with only the store from job 1.

    python -m bench mounts
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import docker

from bench.build_cache import DOCKER, wipe
from bench.table import Row
from tests.support import base_images
from tests.support.c_sources import brotli_sources

SECTION = "mounts"
DOCKERFILE = """\
FROM {base} AS build
ENV CCACHE_DIR=/root/.ccache
COPY c/ /src/c/
COPY Makefile /src/Makefile
RUN --mount=type=cache,id=ccache-bench,target=/root/.ccache make -C /src -j2 CC="ccache gcc"
"""


def job(project: Path, env: dict[str, str], *extra: str) -> dict:
    argv = [sys.executable, "-m", "ci_integration", "build", str(project), "-t",
            "ci-integration-bench/brotli:1", "--docker", DOCKER, "--json", *extra]  # fmt: skip
    return json.loads(subprocess.run(argv, env=env, capture_output=True, text=True,
                                     check=True).stdout)  # fmt: skip


def compile_seconds(report: dict) -> float:
    steps = [s for stage in report["stages"] for s in stage["steps"] if "make" in s["instruction"]]
    return steps[0]["seconds"]


def run() -> list[Row]:
    client = docker.from_env(timeout=600)
    with tempfile.TemporaryDirectory(prefix="bench-mounts-") as scratch:
        work = Path(scratch)
        wipe(client)
        base = base_images.debian_image(client)
        project = work / "project"
        shutil.copytree(brotli_sources() / "c", project / "c")
        shutil.copy(brotli_sources() / "Makefile", project / "Makefile")
        (project / "Dockerfile").write_text(DOCKERFILE.format(base=base))
        env = {**os.environ, "CI_INTEGRATION_PROVIDER": "local", "CI_INTEGRATION_BRANCH": "main",
               "CI_INTEGRATION_CACHE_DIR": str(work / "store")}  # fmt: skip

        first = job(project, env)
        changed = project / "c" / "enc" / "encode.c"
        changed.write_text(changed.read_text() + "\nint bench_changed = 1;\n")
        wipe(client)
        second = job(project, env)
        (mount,) = second["mounts"]
        # The same job without carrying the mount: what the mount cache saves.
        changed.write_text(changed.read_text() + "\nint bench_changed_again = 2;\n")
        wipe(client)
        uncarried = job(project, env, "--no-mount-cache")
        wipe(client)
    client.close()
    hits = mount["ccache"]["hits"]
    calls = hits + mount["ccache"]["misses"]
    return [
        Row(SECTION, "compile step, job 2 vs job 1 (s)", compile_seconds(second),
            compile_seconds(first), target="<= 0.3"),
        Row(SECTION, f"ccache hits in job 2 (of {calls} compilations)", hits, calls,
            target=">= 0.9"),
        Row(SECTION, "mount restore + seed, vs the whole build (s)", mount["restore_seconds"],
            second["seconds"]),
        Row(SECTION, "mount extract + save, vs the whole build (s)", mount["save_seconds"],
            second["seconds"]),
        Row(SECTION, "compile step without the mount cache (s)", compile_seconds(uncarried),
            compile_seconds(first)),
    ]  # fmt: skip
