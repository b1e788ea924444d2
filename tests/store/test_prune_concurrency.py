"""Prune while 8 jobs save and restore, on every backend: no job fails, none
restores wrong data, and after the prune the entries kept fit the limit and no
unreferenced blob older than the backend's grace period is left."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ci_integration.store.manifest import Manifest

WORKER = """
import json, os, subprocess, sys
from pathlib import Path
worker, rounds, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cli = [sys.executable, "-m", "ci_integration", "cache"]


def run(*args, cwd):
    done = subprocess.run([*cli, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args[:2])} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


for i in range(rounds):
    home = Path(f"w{worker}-{i}")
    (home / "data").mkdir(parents=True)
    content = os.urandom(200_000)
    (home / "data" / "blob").write_bytes(content)
    key = f"job-{worker}-{i}"
    run("save", "data", "--key", key, "--strict", "--store", store, cwd=home)
    (home / "data" / "blob").unlink()
    out = run("restore", "data", "--key", key, "--json", "--strict", "--store", store, cwd=home)
    hit = json.loads(out)["cache_hit_kind"]
    restored = (home / "data" / "blob")
    if hit == "exact":
        assert restored.read_bytes() == content, "wrong data restored"
    else:
        assert hit == "miss" and not restored.exists(), hit
    print(hit)
"""


def test_prune_during_eight_jobs(backend, tmp_path, base_env):
    if not backend.can_list:
        pytest.skip("the backend can neither list nor delete (the GitHub cache): no prune")
    env = {**base_env, **backend.env, "CI_INTEGRATION_PROVIDER": "local",
           "CI_INTEGRATION_BRANCH": "feature"}  # fmt: skip
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(n), "4", backend.url], cwd=tmp_path,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(8)
    ]  # fmt: skip
    prune = [sys.executable, "-m", "ci_integration", "cache", "prune", "--max-size", "1M",
             "--protect", "", "--json", "--store", backend.url]  # fmt: skip
    prunes = 0
    deadline = time.monotonic() + 240
    while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
        subprocess.run(prune, env=env, cwd=tmp_path, check=True, capture_output=True)
        prunes += 1
    hits = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        hits += out.split()
    assert prunes >= 2 and len(hits) == 32
    result = json.loads(subprocess.run(prune, env=env, cwd=tmp_path, check=True,
                                       capture_output=True, text=True).stdout)  # fmt: skip
    store = backend.open()
    blobs = list(store.list_blobs())
    referenced = set()
    for entry in store.list_entries():
        manifest = Manifest.from_json(store.get_entry(entry.scope, entry.key))
        referenced.update(blob.digest for blob in manifest.blobs)
    assert result["kept_bytes"] <= 1024 * 1024
    assert sum(b.size for b in blobs if b.digest in referenced) <= 1024 * 1024
    unreferenced = [b for b in blobs if b.digest not in referenced]
    assert all(time.time() - b.modified < store.blob_grace_seconds + 60 for b in unreferenced)
    if store.blob_grace_seconds == 0:
        assert unreferenced == []
    for entry in store.list_entries():  # every entry left restores whole
        subprocess.run([sys.executable, "-m", "ci_integration", "cache", "restore", "data",
                        "--key", entry.key, "--strict", "--fail-on-miss", "--store",
                        backend.url], cwd=tmp_path / "w0-0", env=env, check=True,
                       capture_output=True)  # fmt: skip


def test_sixteen_jobs_at_once(backend, tmp_path, base_env):
    """Load: 16 jobs saving and restoring at the same time, no prune: every restore
    is exact, and no job sees an error."""
    env = {**base_env, **backend.env, "CI_INTEGRATION_PROVIDER": "local",
           "CI_INTEGRATION_BRANCH": "feature"}  # fmt: skip
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(n), "1", backend.url], cwd=tmp_path,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(16)
    ]  # fmt: skip
    hits = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        hits += out.split()
    assert hits == ["exact"] * 16
