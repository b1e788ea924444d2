"""Containers that go with their job: seconds from SIGTERM to the container being gone
(a command that ignores SIGTERM, 1 s of grace), against ``docker stop -t 1`` of an
auto-removed container; and ``cleanup`` of 200 orphans against ``docker rm -f``.

    python -m bench run
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import docker
import docker.errors

from bench.table import Row
from ci_integration.containers import labels as names
from ci_integration.containers.owner import Host, Owner
from ci_integration.context import CIContext, Provider
from tests.support import base_images

SECTION = "run"
IGNORES_TERM = 'trap "" TERM; echo started; while :; do sleep 0.1; done'
ROUNDS = 5
ROUNDS_200 = 3
ORPHANS = 200


def gone_after(api: docker.APIClient, container: str, since: float, limit: float = 30) -> float:
    while time.perf_counter() - since < limit:
        try:
            api.inspect_container(container)
        except docker.errors.NotFound:
            return time.perf_counter() - since
        time.sleep(0.01)
    raise RuntimeError(f"{container} still there after {limit} s")


def ours_sigterm(api: docker.APIClient, image: str, workspace: str) -> float:
    argv = [
        sys.executable,
        "-m",
        "ci_integration",
        "run",
        "--stop-timeout",
        "1",
        image,
        "sh",
        "-c",
        IGNORES_TERM,
    ]
    cli = subprocess.Popen(argv, cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert cli.stdout is not None
    if b"started" not in cli.stdout.readline():
        raise RuntimeError("ci-integration run did not start its command")
    [summary] = api.containers(filters={"label": f"{names.OWNER_PID}={cli.pid}"})
    sent = time.perf_counter()
    cli.send_signal(signal.SIGTERM)
    seconds = gone_after(api, summary["Id"], sent)
    cli.wait(timeout=30)
    return seconds


def docker_stop(api: docker.APIClient, image: str, docker_cli: str) -> float:
    started = subprocess.run(
        [docker_cli, "run", "-d", "--rm", "--init", image, "sh", "-c", IGNORES_TERM],
        check=True,
        capture_output=True,
        text=True,
    )
    container = started.stdout.strip()
    time.sleep(0.3)
    sent = time.perf_counter()
    subprocess.run([docker_cli, "stop", "-t", "1", container], check=True, capture_output=True)
    return gone_after(api, container, sent)


def make_orphans(api: docker.APIClient, image: str, count: int) -> None:
    """Containers created (not started) by a ``run`` whose process is gone."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    owner = Owner(Host.here(), child.pid, 1)
    job = CIContext(
        Provider.JENKINS,
        job_name="bench/orphans",
        build_id="1",
        build_url="https://jenkins.invalid/job/bench/job/orphans/1/",
    )
    labels = names.container_labels(
        job, owner, datetime.datetime.now(datetime.timezone.utc), keep=False
    )
    for _ in range(count):
        api.create_container(image, ["true"], labels=labels)


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def run() -> list[Row]:
    client = docker.from_env(timeout=300)
    api = client.api
    image = base_images.busybox_image(client)
    docker_cli = shutil.which("docker") or "/usr/bin/docker"
    with tempfile.TemporaryDirectory(prefix="bench-run-") as workspace:
        ours = [ours_sigterm(api, image, workspace) for _ in range(ROUNDS)]
    theirs = [docker_stop(api, image, docker_cli) for _ in range(ROUNDS)]

    # JENKINS_URL unset: no API call; the owner rule removes every orphan.
    env = {key: value for key, value in os.environ.items() if not key.startswith("JENKINS")}
    cleanup = [sys.executable, "-m", "ci_integration", "cleanup", "--grace", "0"]
    remove_all = [
        "sh",
        "-c",
        f"{docker_cli} rm -f $({docker_cli} ps -aq --filter label={names.OURS_FILTER})",
    ]
    ours_rm, theirs_rm, left = [], [], 0
    for _ in range(ROUNDS_200):  # in turns, so that neither gets the quieter moments
        make_orphans(api, image, ORPHANS)
        ours_rm.append(timed(cleanup, env))
        left += len(api.containers(all=True, filters={"label": names.OURS_FILTER}))
        make_orphans(api, image, ORPHANS)
        theirs_rm.append(timed(remove_all))
    client.close()
    if left:
        raise RuntimeError(f"cleanup left {left} orphans")
    return [
        Row(
            SECTION,
            "SIGTERM to container gone, 1 s grace, TERM ignored (s, median)",
            statistics.median(ours),
            target="<= 2.0",
        ),
        Row(
            SECTION,
            "the same vs docker stop -t 1 of a --rm container (s, median)",
            statistics.median(ours),
            statistics.median(theirs),
        ),
        Row(
            SECTION,
            f"cleanup of {ORPHANS} orphans vs docker rm -f $(docker ps -aq) (s, best of 3)",
            min(ours_rm),
            min(theirs_rm),
            target="<= 2.0",
        ),
    ]
