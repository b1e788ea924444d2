"""A pull request from a fork runs untrusted code: its job reads the cache and writes
nothing to it. The job's store refuses every write itself, so no command can forget
to ask; each command that writes is run here as such a job, on a real store."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ci_integration import context
from ci_integration.errors import CacheError, CorruptDataError
from ci_integration.job import Job
from ci_integration.store.local import LocalStore
from ci_integration.store.manifest import Manifest
from ci_integration.store.scoped import ScopedStore

FORK = {
    "CI_INTEGRATION_PROVIDER": "local",
    "CI_INTEGRATION_BRANCH": "feature",
    "CI_INTEGRATION_PR_NUMBER": "9",
    "CI_INTEGRATION_BASE_BRANCH": "main",
    "CI_INTEGRATION_IS_FORK": "true",
}


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                  and p.name != "lock")  # fmt: skip


def test_a_read_only_store_refuses_uploads_and_entries_and_keeps_what_it_finds(tmp_path):
    backend = LocalStore(tmp_path / "store")
    writer = ScopedStore(backend, ["branch-main"])
    digest, _ = writer.upload(b"pieces")
    reader = ScopedStore(backend, ["pr-9", "branch-main"], read_only=True,
                         why="a pull request from a fork")  # fmt: skip
    before = stored_files(tmp_path / "store")
    refused = r"may not write to the cache \(a pull request from a fork\)"
    with pytest.raises(CacheError, match=refused):
        reader.upload(b"untrusted")
    manifest = Manifest(kind="dir", key="k", scope="pr-9", blobs=(), metadata={})
    with pytest.raises(CacheError, match=refused):
        reader.commit(manifest)
    # A corrupt blob is left for a job that may write to remove.
    backend._blob_path(digest).write_bytes(b"garbage")
    with pytest.raises(CorruptDataError, match=r"is corrupt$"):
        reader.download(digest)
    assert stored_files(tmp_path / "store") == before


def job_of(env: dict[str, str], cwd: Path) -> Job:
    """The job as the command line makes it."""
    return Job(env, cwd, functools.partial(context.detect, env, cwd))


def test_the_job_store_of_a_fork_is_read_only_whatever_the_cache_mode(tmp_path):
    env = {**FORK, "CI_INTEGRATION_CACHE_DIR": str(tmp_path / "store"), "HOME": str(tmp_path),
           "ACTIONS_CACHE_MODE": "write-only"}  # fmt: skip
    store = job_of(env, tmp_path).store(None)
    # Reading is GitHub's to allow: a write-only fork job neither reads nor writes.
    assert (store.read_only, store.write_only, store.why) == (
        True, True, "a pull request from a fork; ACTIONS_CACHE_MODE is write-only",
    )  # fmt: skip
    same_repository = {**env, "ACTIONS_CACHE_MODE": "", "CI_INTEGRATION_IS_FORK": "false"}
    assert not job_of(same_repository, tmp_path).store(None).read_only


def test_a_fork_job_saves_no_folder(tmp_path, base_env):
    workspace = tmp_path / "ws"
    (workspace / "deps").mkdir(parents=True)
    (workspace / "deps" / "lib.txt").write_text("untrusted\n")
    env = {**base_env, **FORK, "CI_INTEGRATION_CACHE_DIR": str(tmp_path / "store")}
    result = subprocess.run(
        [sys.executable, "-m", "ci_integration", "cache", "save", "deps", "--key", "k", "--json"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["saved"] is False
    assert "a pull request from a fork" in result.stderr
    assert not (tmp_path / "store").exists() or stored_files(tmp_path / "store") == []
