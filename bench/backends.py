"""Store backends side by side: ``cache save`` and ``cache restore`` of the same
~500 MB folder through each backend, as a ratio to the local folder store.
Informational: S3 here is moto's server on 127.0.0.1, a Python process, so the
figure says what the backend's code costs, not what a real service delivers; OCI is
Debian's docker-registry on 127.0.0.1, storing on this machine's disk; gha-v2 is the
GitHub cache service's v2 protocol against the tests' loopback twirp service, its
bytes in azurite (npm, ./dev setup) on this machine's disk.

    python -m bench backends        (BENCH_BACKENDS_MB=100 for a quicker run)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.cache_directory import make_folder
from bench.table import Row

SECTION = "backends"
RUNS = 3
JOB_ENV = {"CI_INTEGRATION_PROVIDER": "local", "CI_INTEGRATION_BRANCH": "main"}
# Dummy credentials: moto accepts any.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                  "AWS_REGION": "us-east-1"}  # fmt: skip


@contextlib.contextmanager
def local_store(scratch: Path) -> Iterator[Callable[[], tuple[str, dict[str, str]]]]:
    """Gives a function that empties a store and returns its URL and environment."""

    def fresh() -> tuple[str, dict[str, str]]:
        shutil.rmtree(scratch / "store", ignore_errors=True)
        return f"file://{scratch / 'store'}", {}

    yield fresh


@contextlib.contextmanager
def s3_store(scratch: Path) -> Iterator[Callable[[], tuple[str, dict[str, str]]]]:
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

        def fresh() -> tuple[str, dict[str, str]]:
            for old in buckets:  # moto holds objects in this process: free them
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=old):
                    for item in page.get("Contents", []):
                        client.delete_object(Bucket=old, Key=item["Key"])
            buckets[:] = [f"bench-{uuid.uuid4().hex[:12]}"]
            client.create_bucket(Bucket=buckets[0])
            return f"s3://{buckets[0]}/cache", env

        yield fresh
    finally:
        server.stop()


@contextlib.contextmanager
def oci_store(scratch: Path) -> Iterator[Callable[[], tuple[str, dict[str, str]]]]:
    """docker-registry on a free port of 127.0.0.1; each run a fresh repository."""
    folder = scratch / "registry"
    folder.mkdir()
    (folder / "registry.yml").write_text(
        "version: 0.1\nlog: {level: info, accesslog: {disabled: true}}\n"
        f"storage: {{filesystem: {{rootdirectory: '{folder / 'data'}'}}, "
        "delete: {enabled: true}}\nhttp: {addr: '127.0.0.1:0'}\n"
    )
    log_path = folder / "registry.log"
    with log_path.open("wb") as log_file:
        server = subprocess.Popen([shutil.which("docker-registry") or "/usr/bin/docker-registry",
                                   "serve", str(folder / "registry.yml")],
                                  stdout=log_file, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (found := re.search(r"listening on (127\.0\.0\.1:\d+)", log_path.read_text())):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start: {log_path.read_text()}")
            time.sleep(0.05)
        yield lambda: (f"oci://{found[1]}/bench/run-{uuid.uuid4().hex[:12]}", {})
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@contextlib.contextmanager
def gha_v2_store(scratch: Path) -> Iterator[Callable[[], tuple[str, dict[str, str]]]]:
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

        def fresh() -> tuple[str, dict[str, str]]:
            services.close()
            service = services.enter_context(
                gha_twirp_service.running_twirp_service(account, f"bench-{uuid.uuid4().hex}")
            )
            return "gha://", gha_twirp_service.job_env(service)

        yield fresh


BACKENDS = {"local": local_store, "s3": s3_store, "oci": oci_store, "gha-v2": gha_v2_store}


def timed_cli(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    os.sync()  # the run before must not flush its dirty pages on this run's time
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ci_integration", *args], cwd=cwd, env=env,
                   capture_output=True, text=True, check=True)  # fmt: skip
    return time.perf_counter() - started


def measure(fresh: Callable[[], tuple[str, dict[str, str]]], base: Path) -> tuple[float, float]:
    """Best save and best restore seconds over RUNS, each save into an empty store."""
    saves, restores = [], []
    for _ in range(RUNS):
        url, store_env = fresh()
        env = {**os.environ, **JOB_ENV, **store_env}
        saves.append(timed_cli(["cache", "save", "data", "--key", "bench", "--store", url,
                                "--strict"], base / "job1", env))  # fmt: skip
        target = base / "job2"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        restores.append(timed_cli(["cache", "restore", "data", "--key", "bench", "--store", url,
                                   "--strict", "--fail-on-miss"], target, env))  # fmt: skip
    return min(saves), min(restores)


def run() -> list[Row]:
    total_mb = int(os.environ.get("BENCH_BACKENDS_MB", "500"))
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as scratch:
        base = Path(scratch)
        files = make_folder(base / "job1" / "data", total_mb)
        mib = sum(path.stat().st_size for path in files) / 1024 / 1024
        results = {}
        for name, backend in BACKENDS.items():
            with backend(base) as fresh:
                results[name] = measure(fresh, base)
    local_save, local_restore = results["local"]
    rows = []
    for name, (save_s, restore_s) in results.items():
        rows.append(Row(SECTION, f"{name}: save {mib:.0f} MiB, {len(files)} files (MiB/s)",
                        mib / save_s, mib / local_save))  # fmt: skip
        rows.append(Row(SECTION, f"{name}: restore (MiB/s)", mib / restore_s,
                        mib / local_restore))  # fmt: skip
    return rows
