"""Cached builds: ``ci-integration build`` against what users do today, on a Debian
base of ~370 MB with a compiled program and small top layers, on each engine of the
matrix (tests/support/engines.py; ``CI_INTEGRATION_TEST_ENGINES`` picks), each a
private engine started for the bench.

(a) ``docker save | zstd`` of the image after each job, ``zstd -d | docker load``
    before the next; (b) plain ``docker build --cache-from IMAGE`` on what (a)
    loaded. Ours: the store, a wiped engine, ``ci-integration build`` (which takes
    an image whose inputs are unchanged whole; ``--always-build`` runs the builder).

    python -m bench build
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from bench.table import Row
from tests.support import base_images, engines

SECTION = "build"
DOCKER = "/usr/bin/docker"  # Debian's 20.10 client: BuildKit without buildx
# What the one-line change may upload besides its new layer: listings, config, manifest.
LISTING_ALLOWANCE = 64 * 1024
ROUNDS = 5  # job 2 is timed this often each way, in turn; the medians are compared
SETTLE_S = 2.0  # after a wipe, for the engine's garbage collection to finish
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


def wipe(client: docker.DockerClient, *, settle: bool = False) -> None:
    """A fresh agent; with ``settle``, once the engine has had time to drop what went
    (the containerd store deletes content in the background: it would land in the
    next timing, and moved a 5 s load by 2 s either way)."""
    _remove_everything(client)
    if settle:
        os.sync()
        time.sleep(SETTLE_S)


def _remove_everything(client: docker.DockerClient) -> None:
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


def ours(project: Path, env: dict[str, str], *flags: str) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "ci_integration", "build", str(project), "-t", IMAGE, "--json",
            *flags]  # fmt: skip
    os.sync()
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(result.stdout)


def run() -> list[Row]:
    rows = []
    with engines.pool() as pool:
        for kind in engines.matrix():
            rows += run_on(pool.get(kind))
    return rows


def run_on(engine: engines.Engine) -> list[Row]:
    client, docker = engine.client, engine.docker
    section = f"{SECTION} {engine.name}"
    with tempfile.TemporaryDirectory(prefix="bench-build-") as scratch:
        work = Path(scratch)
        wipe(client)
        base = base_images.debian_image(client)
        make_project(work / "project", base)
        engine_env = {**os.environ, **engine.env}
        env = {**engine_env, "CI_INTEGRATION_DOCKER": docker, "CI_INTEGRATION_PROVIDER": "local",
               "CI_INTEGRATION_BRANCH": "main",
               "CI_INTEGRATION_CACHE_DIR": str(work / "store")}  # fmt: skip
        bk = {**engine_env, "DOCKER_BUILDKIT": "1"}
        build_cmd = (f"{docker} build --progress=plain --build-arg BUILDKIT_INLINE_CACHE=1 "
                     f"--cache-from {IMAGE} -t {IMAGE} project")  # fmt: skip

        # Job 1, cold, both ways; (a) uploads the whole image, we upload the store.
        ours(work / "project", env)
        sh(build_cmd, work, bk)
        archive = work / "image.tar.zst"
        sh(f"{docker} save {IMAGE} {base} | zstd -T0 -3 -q -o {archive}", work, engine_env)
        image_bytes = archive.stat().st_size

        # Job 2 on a wiped engine, ROUNDS times, the two ways in turn: (a) load the
        # tarball, then (b) build with --cache-from; ours, which takes the image whole.
        load_times, our_times = [], []
        for _ in range(ROUNDS):
            wipe(client, settle=True)
            load_times.append(sh(f"zstd -d -q -c {archive} | {docker} load", work, engine_env)[0])
            _, log = sh(build_cmd, work, bk)
            baseline_cached = buildkit_cached(log)
            wipe(client, settle=True)
            ours_s, report = ours(work / "project", env)
            our_times.append(ours_s)
        # And with the builder run all the same: every step must come from the cache.
        wipe(client)
        built_s, built = ours(work / "project", env, "--always-build")
        our_cached = sum(len([s for s in st["steps"] if s["cached"]]) for st in built["stages"])
        our_steps = sum(len(st["steps"]) for st in built["stages"])

        # Job 3: one line changed, on a wiped engine.
        (work / "project" / "config.txt").write_text("setting = 2\n")
        wipe(client)
        _, changed = ours(work / "project", env)
        uploaded = sum(stage["uploaded_bytes"] for stage in changed["stages"])
        new_layer = layer_size(client, IMAGE)
        wipe(client)
    load_s = statistics.median(load_times)
    return [
        Row(section, f"restore + build on a wiped engine vs docker load (s, median of "
            f"{ROUNDS}), {report['cache_mechanism']}", statistics.median(our_times), load_s,
            target="<= 1.1"),
        Row(section, f"  spread: ours {spread(our_times)}, docker load {spread(load_times)}",
            min(our_times), min(load_times)),
        Row(section, "the same, the builder run all the same (--always-build, s)", built_s,
            load_s),
        Row(section, "upload after a one-line change, less its new layer (bytes)",
            max(0, uploaded - new_layer), LISTING_ALLOWANCE, target="<= 1.0"),
        Row(section, "upload after a one-line change vs the whole image (bytes)", uploaded,
            image_bytes, target="<= 0.1"),
        Row(section, "steps cached on a wiped engine: ours, --always-build", our_cached, our_steps,
            target=">= 1.0"),
        Row(section, "steps cached on a wiped engine: docker load + --cache-from",
            baseline_cached[0], baseline_cached[1]),
    ]  # fmt: skip


def spread(times: list[float]) -> str:
    return f"{min(times):.2f}-{max(times):.2f} s"


def layer_size(client: docker.DockerClient, image: str) -> int:
    """The size of the image's top layer, as the engine measures it (uncompressed)."""
    history = client.api.history(image)
    return int(history[0]["Size"]) if history else 0
