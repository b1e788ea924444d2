"""Cached builds: ``ci-integration build`` against what users do today, on a Debian
base of ~370 MB with a compiled program and small top layers.

(a) ``docker save | zstd`` of the image after each job, ``zstd -d | docker load``
    before the next; (b) plain ``docker build --cache-from IMAGE`` on what (a)
    loaded. Ours: the store, a wiped engine, ``ci-integration build``.

    python -m bench build
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from bench.table import Row
from tests.support import base_images

SECTION = "build"
DOCKER = "/usr/bin/docker"  # Debian's 20.10 client: BuildKit without buildx
IMAGE = "ci-integration-bench/app:1"
DOCKERFILE = """\
FROM {base} AS build
COPY src/ /src/
RUN gcc -O2 -o /hello /src/hello.c
RUN /hello > /hello.txt
FROM {base} AS final
RUN useradd --create-home app
COPY --from=build /hello /usr/local/bin/hello
COPY --from=build /hello.txt /srv/hello.txt
COPY config.txt /etc/app.txt
"""


def make_project(root: Path, base: str) -> None:
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (root / "src" / "hello.c").write_text(
        '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
    )
    (root / "config.txt").write_text("setting = 1\n")


def wipe(client: docker.DockerClient) -> None:
    for container in client.containers.list(all=True):
        container.remove(force=True)
    for _ in range(10):
        images = client.images.list(all=True)
        if not images:
            break
        for image in images:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id, force=True)
    client.api.prune_builds(all=True)


def sh(command: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    os.sync()
    started = time.perf_counter()
    result = subprocess.run(
        command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return time.perf_counter() - started, result.stdout + result.stderr


def buildkit_cached(log: str) -> tuple[int, int]:
    """(cached, all) user steps in a BuildKit plain-progress log."""
    steps = set(re.findall(r"^#(\d+) \[[^\]]+ \d+/\d+\] (?!FROM)", log, re.MULTILINE))
    cached = set(re.findall(r"^#(\d+) CACHED$", log, re.MULTILINE))
    return len(steps & cached), len(steps)


def ours(project: Path, env: dict[str, str]) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "ci_integration", "build", str(project), "-t", IMAGE,
            "--docker", DOCKER, "--json"]  # fmt: skip
    os.sync()
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(result.stdout)


def run() -> list[Row]:
    client = docker.from_env(timeout=600)
    with tempfile.TemporaryDirectory(prefix="bench-build-") as scratch:
        work = Path(scratch)
        wipe(client)
        base = base_images.debian_image(client)
        make_project(work / "project", base)
        env = {**os.environ, "CI_INTEGRATION_PROVIDER": "local", "CI_INTEGRATION_BRANCH": "main",
               "CI_INTEGRATION_CACHE_DIR": str(work / "store")}  # fmt: skip
        bk = {**os.environ, "DOCKER_BUILDKIT": "1"}
        build_cmd = (f"{DOCKER} build --progress=plain --build-arg BUILDKIT_INLINE_CACHE=1 "
                     f"--cache-from {IMAGE} -t {IMAGE} project")  # fmt: skip

        # Job 1, cold, both ways; (a) uploads the whole image, we upload the store.
        ours(work / "project", env)
        sh(build_cmd, work, bk)
        archive = work / "image.tar.zst"
        sh(f"{DOCKER} save {IMAGE} {base} | zstd -T0 -3 -q -o {archive}", work)
        image_bytes = archive.stat().st_size

        # Job 2 on a wiped engine: (a) load the tarball, (b) build with --cache-from.
        wipe(client)
        load_s, _ = sh(f"zstd -d -q -c {archive} | {DOCKER} load", work)
        _, log = sh(build_cmd, work, bk)
        baseline_cached = buildkit_cached(log)
        wipe(client)
        ours_s, report = ours(work / "project", env)
        our_cached = sum(len([s for s in st["steps"] if s["cached"]]) for st in report["stages"])
        our_steps = sum(len(st["steps"]) for st in report["stages"])

        # Job 3: one line changed, on a wiped engine.
        (work / "project" / "config.txt").write_text("setting = 2\n")
        wipe(client)
        _, changed = ours(work / "project", env)
        uploaded = sum(stage["uploaded_bytes"] for stage in changed["stages"])
        wipe(client)
    client.close()
    return [
        Row(SECTION, "restore + build on a wiped engine vs docker load (s)", ours_s, load_s,
            target="<= 1.2"),
        Row(SECTION, "upload after a one-line change vs the whole image (bytes)", uploaded,
            image_bytes, target="<= 0.1"),
        Row(SECTION, "steps cached on a wiped engine: ours", our_cached, our_steps,
            target=">= 1.0"),
        Row(SECTION, "steps cached on a wiped engine: docker load + --cache-from",
            baseline_cached[0], baseline_cached[1]),
    ]  # fmt: skip
