"""Store backends side by side: ``cache save`` and ``cache restore`` of the same
~500 MB folder through each backend, as a ratio to the local folder store.
Informational: S3 here is moto's server on 127.0.0.1, a Python process, so the
figure says what the backend's code costs, not what a real service delivers; OCI is
Debian's docker-registry on 127.0.0.1, storing on this machine's disk; gha-v1 is the
GitHub cache service's v1 protocol against act's cache server (a running act job's);
gha-v2 is its v2 protocol against the tests' loopback twirp service, its bytes in
azurite (npm, ./dev setup) on this machine's disk; jenkins saves into the workspace
folder a build archives, and restores from the loopback Jenkins of the tests, which
serves that folder as the job's last successful build through the remote access API.

    python -m bench backends        (BENCH_BACKENDS_MB=100 BENCH_RUNS=3 for a quicker
                                     run; BENCH_BACKENDS=local,s3,gha-v2 for some of them)

As ``bench cache`` does, each save and restore runs with the page cache dropped (where
the bench may), each restore writes a new folder, and each figure is the median of
5 runs with the spread beside it.

Each backend also shows what a save under an unrelated key uploads after about 2 %
of the folder changed (no --restore-key: the key a workflow spells with hashFiles),
as a share of what the first save uploaded; the target is under 5 %. Not on
jenkins://, whose every build archives a whole folder (older builds' artifacts go
with their builds), so the next build's save writes it all again, by design.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.cache_directory import Timer, make_folder, spread
from bench.table import Row

SECTION = "backends"
JOB_ENV = {"CI_INTEGRATION_PROVIDER": "local", "CI_INTEGRATION_BRANCH": "main"}
# Dummy credentials: moto accepts any.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                  "AWS_REGION": "us-east-1"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Target:
    """An empty store: its URL, and the environments of the saving and the restoring job."""

    url: str
    save_env: dict[str, str]
    restore_env: dict[str, str]

    @classmethod
    def shared(cls, url: str, store_env: dict[str, str]) -> Target:
        """Both jobs on the branch main of a plain checkout."""
        env = {**JOB_ENV, **store_env}
        return cls(url, env, env)


Fresh = Callable[[], Target]


@contextlib.contextmanager
def local_store(scratch: Path) -> Iterator[Fresh]:
    """Gives a function that empties a store and returns it."""

    def fresh() -> Target:
        shutil.rmtree(scratch / "store", ignore_errors=True)
        return Target.shared(f"file://{scratch / 'store'}", {})

    yield fresh


@contextlib.contextmanager
def s3_store(scratch: Path) -> Iterator[Fresh]:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {**S3_CREDENTIALS, "CI_INTEGRATION_S3_ENDPOINT": f"http://{host}:{port}"}
        client = boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        ).client("s3", endpoint_url=env["CI_INTEGRATION_S3_ENDPOINT"])
        buckets: list[str] = []

        def fresh() -> Target:
            for old in buckets:  # moto holds objects in this process: free them
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=old):
                    for item in page.get("Contents", []):
                        client.delete_object(Bucket=old, Key=item["Key"])
            buckets[:] = [f"bench-{uuid.uuid4().hex[:12]}"]
            client.create_bucket(Bucket=buckets[0])
            return Target.shared(f"s3://{buckets[0]}/cache", env)

        yield fresh
    finally:
        server.stop()


@contextlib.contextmanager
def oci_store(scratch: Path) -> Iterator[Fresh]:
    """docker-registry on a free port of 127.0.0.1; each run a fresh repository."""
    from tests.store.conftest import running_registry

    with running_registry(scratch / "registry") as registry:
        yield lambda: Target.shared(f"oci://{registry.address}/bench/run-{uuid.uuid4().hex[:12]}",
                                    {})  # fmt: skip


@contextlib.contextmanager
def gha_v1_store(scratch: Path) -> Iterator[Fresh]:
    """act's cache server, a job's own; each run a fresh job, so a fresh cache."""
    # gha_backends is imported by the store tests' conftest, and needs it loaded first.
    import tests.store.conftest  # noqa: F401
    from tests.store.gha_backends import running_act_cache_service

    with contextlib.ExitStack() as services:

        def fresh() -> Target:
            services.close()
            root = Path(tempfile.mkdtemp(dir=scratch, prefix="act-"))
            env = services.enter_context(running_act_cache_service(root))
            return Target.shared("gha://", env)

        yield fresh


@contextlib.contextmanager
def gha_v2_store(scratch: Path) -> Iterator[Fresh]:
    """azurite on disk and a loopback twirp service; each run a fresh service."""
    from tests.store import gha_twirp_service

    binary = gha_twirp_service.azurite_binary()
    if binary is None:
        raise RuntimeError(gha_twirp_service.INSTALL_HINT)
    with contextlib.ExitStack() as stack:
        account = stack.enter_context(
            gha_twirp_service.running_azurite(binary, scratch / "azurite", in_memory=False)
        )
        services = contextlib.ExitStack()
        stack.callback(services.close)

        def fresh() -> Target:
            services.close()
            service = services.enter_context(
                gha_twirp_service.running_twirp_service(account, f"bench-{uuid.uuid4().hex}")
            )
            return Target.shared("gha://", gha_twirp_service.job_env(service))

        yield fresh


@contextlib.contextmanager
def jenkins_store(scratch: Path) -> Iterator[Fresh]:
    """Build 1 of a branch job saves into its workspace's folder, which the loopback
    Jenkins serves as the job's last successful build; build 2, in a new workspace,
    restores it through the API. Each run another job."""
    from ci_integration.store.jenkins import DEFAULT_FOLDER
    from tests.store import jenkins_front
    from tests.store.jenkins_backends import JENKINS_TOKEN, JENKINS_USER, jenkins_env

    with jenkins_front.serve(JENKINS_USER, JENKINS_TOKEN) as front:

        def fresh() -> Target:
            job = f"bench-{uuid.uuid4().hex[:8]}/feature"
            builds = scratch / "jenkins" / job
            front.publish(job, 1, builds / "1", DEFAULT_FOLDER)
            return Target(
                "jenkins://",
                jenkins_env(front.url, builds / "1", JOB_NAME=job, BUILD_NUMBER="1"),
                jenkins_env(front.url, builds / "2", JOB_NAME=job, BUILD_NUMBER="2"),
            )

        yield fresh


BACKENDS = {"local": local_store, "s3": s3_store, "oci": oci_store, "gha-v1": gha_v1_store,
            "gha-v2": gha_v2_store, "jenkins": jenkins_store}  # fmt: skip


@dataclasses.dataclass
class Measured:
    # "save" and "restore": the seconds of each run
    seconds: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: {"save": [], "restore": []}
    )
    upload_share: float = 0.0


def measure(fresh: Fresh, base: Path, timer: Timer, runs: int) -> Measured:
    """Save and restore seconds over ``runs``, each save into an empty store and each
    restore into a new folder; and the share of the first save's upload that a save
    under another key uploads once about 2 % of the folder changed."""
    cli = [sys.executable, "-m", "ci_integration"]
    measured = Measured()
    for _ in range(runs):
        target = fresh()
        store = ["--key", "bench", "--store", target.url, "--strict"]
        seconds, printed = timer.run("save", [*cli, "cache", "save", "data", *store, "--json"],
                                     base / "job1", {**os.environ, **target.save_env})  # fmt: skip
        measured.seconds["save"].append(seconds)
        first = json.loads(printed)["uploaded_bytes"]
        # A new folder each time, left until the end: deleting a restored folder
        # just before the next restore slows that one on some file systems.
        job2 = Path(tempfile.mkdtemp(prefix="job2-", dir=base))
        argv = [*cli, "cache", "restore", "data", *store, "--fail-on-miss"]
        seconds = timer.run("restore", argv, job2, {**os.environ, **target.restore_env})[0]
        measured.seconds["restore"].append(seconds)
    # The next job: what it restored changed a little, saved under the key of its lock file.
    change_two_percent(job2 / "data")
    argv = [*cli, "cache", "save", "data", "--key", "lock-3f9a", "--store", target.url,
            "--strict", "--json"]  # fmt: skip
    printed = timer.run("save again", argv, job2, {**os.environ, **target.restore_env})[1]
    measured.upload_share = json.loads(printed)["uploaded_bytes"] / first
    return measured


def change_two_percent(folder: Path) -> None:
    """Rewrite files, largest first, until about 2 % of the folder's bytes changed."""
    files = sorted((path for path in folder.rglob("*") if path.is_file()),
                   key=lambda path: path.stat().st_size)  # fmt: skip
    budget = sum(path.stat().st_size for path in files) * 0.02
    for path in files[len(files) // 2 :]:
        if budget <= 0:
            break
        size = path.stat().st_size
        if size <= budget:
            path.write_bytes(os.urandom(size))
            budget -= size


def chosen_backends() -> list[str]:
    """Every backend, or those $BENCH_BACKENDS names; local always, as the reference."""
    named = [name for name in os.environ.get("BENCH_BACKENDS", "").split(",") if name]
    unknown = sorted(set(named) - BACKENDS.keys())
    if unknown:
        raise SystemExit(f"bench: unknown backend {unknown[0]!r}; known: {', '.join(BACKENDS)}")
    others = [name for name in BACKENDS if name != "local"]
    return ["local", *(name for name in others if not named or name in named)]


def run() -> list[Row]:
    total_mb = int(os.environ.get("BENCH_BACKENDS_MB", "500"))
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    timer = Timer()
    if not timer.cold:
        print("bench: cannot drop the page cache (not root): runs read from memory",
              file=sys.stderr)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as scratch:
        base = Path(scratch)
        files = make_folder(base / "job1" / "data", total_mb)
        mib = sum(path.stat().st_size for path in files) / 1024 / 1024
        results = {}
        for name in chosen_backends():
            with BACKENDS[name](base) as fresh:
                results[name] = measure(fresh, base, timer, runs)
    rows = []
    for what in ("save", "restore"):
        local = statistics.median(mib / seconds for seconds in results["local"].seconds[what])
        for name, measured in results.items():
            rates = [mib / seconds for seconds in measured.seconds[what]]
            rows.append(Row(SECTION, f"{name}: {what} {mib:.0f} MiB, {len(files)} files"
                            f" (MiB/s, median of {runs}, spread {spread(rates)})",
                            statistics.median(rates), local))  # fmt: skip
    for name, measured in results.items():
        whole = name == "jenkins"  # each build's archive holds every blob it needs
        rows.append(Row(SECTION, f"{name}: 2 % changed, new key: uploaded (% of first)",
                        100 * measured.upload_share, target=None if whole else "<= 5"))  # fmt: skip
    return rows
