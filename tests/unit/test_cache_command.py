"""``ci-integration cache`` as jobs run it: real processes on one local store."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ci_integration.cli import main
from ci_integration.store.local import LocalStore


@pytest.fixture
def job(tmp_path, base_env):
    """A job's environment: a Jenkins branch build of main, with its own store."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    env = {
        **base_env,
        "JENKINS_URL": "https://ci.example.com/",
        "BRANCH_NAME": "main",
        "BRANCH_IS_PRIMARY": "true",
        "CI_INTEGRATION_CACHE_DIR": str(tmp_path / "store"),
    }
    return workspace, env


def cli(workspace: Path, env: dict, *args: str, check: bool = True):
    result = subprocess.run(
        [sys.executable, "-m", "ci_integration", *args],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}: {result.stderr}")
    return result


def fill(folder: Path, files: int = 50, size: int = 20_000) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        (folder / f"{index}.bin").write_bytes(os.urandom(size))


def test_save_restore_outputs(job, tmp_path):
    workspace, env = job
    fill(workspace / "cache")
    output = tmp_path / "out"
    env = {**env, "GITHUB_OUTPUT": str(output)}
    saved = json.loads(
        cli(workspace, env, "cache", "save", "cache", "--key", "k-{os}", "--json").stdout
    )
    assert saved["saved"] and saved["files"] == 50 and saved["scope"] == "branch-main"
    restored = cli(
        workspace, env, "cache", "restore", "cache", "--key", "k-{os}", "--github-output"
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert (outputs["cache-hit"], outputs["cache-hit-kind"]) == ("true", "exact")
    assert outputs["matched-key"] == saved["key"]
    assert "restored k-" in restored.stderr
    miss = json.loads(
        cli(workspace, env, "cache", "restore", "cache", "--key", "other", "--json").stdout
    )
    assert miss["cache_hit_kind"] == "miss"
    failed = cli(
        workspace, env, "cache", "restore", "cache", "--key", "other", "--fail-on-miss", check=False
    )
    assert failed.returncode == 3 and "no cache entry for other" in failed.stderr
    failed = cli(workspace, env, "cache", "restore", "cache", "--key", "other",
                 "--fail-on-cache-miss", check=False)  # fmt: skip
    assert failed.returncode == 3 and "no cache entry for other" in failed.stderr


def test_outputs_in_actions_cache_terms_and_a_lookup_that_downloads_nothing(job, tmp_path):
    workspace, env = job
    fill(workspace / "cache", files=3)
    saved = json.loads(
        cli(workspace, env, "cache", "save", "cache", "--key", "k-{os}-1", "--json").stdout
    )
    output = tmp_path / "out"
    env = {**env, "GITHUB_OUTPUT": str(output)}
    cli(workspace, env, "cache", "restore", "cache", "--key", "k-{os}-2",
        "--restore-key", "k-", "--github-output")  # fmt: skip
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert (outputs["cache-hit"], outputs["cache-hit-kind"]) == ("false", "partial")
    assert outputs["primary-key"] == saved["key"].replace("-1", "-2")
    assert outputs["matched-key"] == saved["key"]

    before = {path.name: path.read_bytes() for path in (workspace / "cache").iterdir()}
    shutil.rmtree(workspace / "cache")
    looked = cli(workspace, env, "cache", "restore", "cache", "--key", "k-{os}-1",
                 "--lookup-only", "--json")  # fmt: skip
    found = json.loads(looked.stdout)
    assert (found["cache_hit_kind"], found["cache_hit"], found["files"]) == ("exact", True, 3)
    assert "not restored (--lookup-only)" in looked.stderr
    assert not (workspace / "cache").exists()
    cli(workspace, env, "cache", "restore", "cache", "--key", "k-{os}-1")
    assert {path.name: path.read_bytes() for path in (workspace / "cache").iterdir()} == before


def test_eight_concurrent_writers_leave_one_valid_entry(job, tmp_path):
    workspace, env = job
    writers = []
    for index in range(8):
        own = workspace / f"w{index}"
        fill(own / "cache", files=20, size=100_000)
        (own / "cache" / "who").write_text(str(index))
        writers.append(subprocess.Popen(
            [sys.executable, "-m", "ci_integration", "cache", "save", "cache", "--key", "shared"],
            cwd=own, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.stderr.read()
    cli(workspace, env, "cache", "restore", "cache", "--key", "shared")
    winner = int((workspace / "cache" / "who").read_text())
    expected = sorted((workspace / f"w{winner}" / "cache").iterdir())
    restored = sorted((workspace / "cache").iterdir())
    assert [p.name for p in restored] == [p.name for p in expected]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(restored, expected, strict=True))
    assert list(LocalStore(Path(env["CI_INTEGRATION_CACHE_DIR"])).tmp.iterdir()) == []


SIGNAL_ATTEMPTS = 5


def interrupted_save(workspace: Path, env: dict[str, str], store: LocalStore, sig: int) -> int:
    """A save of ``cache`` sent ``sig`` once its first pack is in the store; its exit code."""
    # As from a shell's foreground: a background job (nohup, `&` in a script) starts
    # with SIGINT ignored, and Python then keeps ignoring it, as it should.
    save = ["-m", "ci_integration", "cache", "save", "cache", "--key", "big"]
    in_foreground = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                     "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-c", in_foreground, *save],
        cwd=workspace, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not list(store.blobs.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(sig)
    return process.wait(timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_an_interrupted_save_leaves_no_entry_and_the_next_save_works(sig, job):
    workspace, env = job
    fill(workspace / "cache", files=400, size=250_000)  # ~100 MB: slow enough to interrupt
    store = LocalStore(Path(env["CI_INTEGRATION_CACHE_DIR"]))
    # The signal goes once the first pack is stored; on a loaded machine the save may
    # still end first, now and then: then it is tried again on an empty store, so that
    # the test never passes without having interrupted a save.
    for _attempt in range(SIGNAL_ATTEMPTS):
        code = interrupted_save(workspace, env, store, sig)
        if store.get_entry("branch-main", "big") is None:
            break
        shutil.rmtree(store.root)
        store = LocalStore(store.root)
    else:
        pytest.fail(f"every one of {SIGNAL_ATTEMPTS} saves ended before its signal")
    assert store.list_entries() == []
    if sig != signal.SIGKILL:
        # A caught signal unwinds: exit 128+N, and no temp file is left behind.
        assert code == 128 + sig
        assert list(store.tmp.iterdir()) == []
    cli(workspace, env, "cache", "save", "cache", "--key", "big")
    assert [e.key for e in store.list_entries()] == ["big"]
    cli(workspace, env, "cache", "prune")  # sweeps what a SIGKILL left
    assert list(store.tmp.iterdir()) == []


def test_cache_trouble_warns_unless_strict(job, tmp_path):
    workspace, env = job
    fill(workspace / "cache", files=2)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = {**env, "CI_INTEGRATION_CACHE_DIR": str(blocker / "store")}
    lenient = cli(workspace, env, "cache", "save", "cache", "--key", "k", check=False)
    assert lenient.returncode == 0 and "warning: not saved k" in lenient.stderr
    strict = cli(workspace, env, "cache", "save", "cache", "--key", "k", "--strict", check=False)
    assert strict.returncode == 3
    assert strict.stderr.strip().splitlines()[-1].startswith("ci-integration: error: ")
    restore = cli(workspace, env, "cache", "restore", "cache", "--key", "k", check=False)
    assert restore.returncode == 0 and "restored nothing for k" in restore.stderr


def test_a_corrupt_store_warns_and_the_job_goes_on(job):
    workspace, env = job
    fill(workspace / "cache", files=5)
    cli(workspace, env, "cache", "save", "cache", "--key", "k")
    store = LocalStore(Path(env["CI_INTEGRATION_CACHE_DIR"]))
    for blob in store.list_blobs():
        store._blob_path(blob.digest).write_bytes(b"garbage")
    result = cli(workspace, env, "cache", "restore", "cache", "--key", "k", "--json")
    assert json.loads(result.stdout)["cache_hit_kind"] == "miss"
    assert "warning: restored nothing for k" in result.stderr and "corrupt" in result.stderr
    assert len(list((workspace / "cache").iterdir())) == 5  # untouched
    strict = cli(workspace, env, "cache", "restore", "cache", "--key", "k", "--strict", check=False)
    assert strict.returncode == 3


def test_a_fork_pull_request_restores_but_never_saves(job, tmp_path):
    workspace, env = job
    fill(workspace / "cache", files=3)
    cli(workspace, env, "cache", "save", "cache", "--key", "k")
    fork = {
        **env,
        "BRANCH_NAME": "PR-9",
        "CHANGE_ID": "9",
        "CHANGE_TARGET": "main",
        "CHANGE_FORK": "mallory",
        "BRANCH_IS_PRIMARY": "",
    }
    restored = json.loads(
        cli(workspace, fork, "cache", "restore", "cache", "--key", "k", "--json").stdout
    )
    assert restored["cache_hit_kind"] == "exact" and restored["matched_scope"] == "branch-main"
    result = cli(workspace, fork, "cache", "save", "cache", "--key", "k2", "--json")
    assert json.loads(result.stdout)["saved"] is False and "read-only" in result.stderr
    assert [e.key for e in LocalStore(Path(env["CI_INTEGRATION_CACHE_DIR"])).list_entries()] == [
        "k"
    ]


def test_prune_evicts_least_recently_used_first(job):
    workspace, env = job
    store = LocalStore(Path(env["CI_INTEGRATION_CACHE_DIR"]))
    for name in ("old", "used", "new"):
        fill(workspace / name, files=10, size=100_000)  # ~1 MB each, incompressible
        cli(workspace, env, "cache", "save", name, "--key", name)
        time.sleep(0.05)
    cli(workspace, env, "cache", "restore", "old", "--key", "old")  # now recently used
    # The default branch's scope is protected by default: nothing goes.
    kept = json.loads(cli(workspace, env, "cache", "prune", "--max-size", "2.5M", "--json").stdout)
    assert kept["removed_entries"] == [] and len(store.list_entries()) == 3
    dry = json.loads(
        cli(workspace, env, "cache", "prune", "--max-size", "2.5M", "--dry-run", "--json",
            "--protect", "").stdout
    )  # fmt: skip
    assert dry["removed_entries"] == ["branch-main/used"] and len(store.list_entries()) == 3
    cli(workspace, env, "cache", "prune", "--max-size", "2.5M", "--protect", "")
    assert sorted(e.key for e in store.list_entries()) == ["new", "old"]
    total = sum(b.size for b in store.list_blobs())
    assert total <= 2.5 * 1024 * 1024
    for name in ("old", "new"):
        cli(workspace, env, "cache", "restore", name, "--key", name, "--fail-on-miss")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cache", "save", "x", "--key", "a b"], "invalid cache key"),
        (["cache", "save", "x"], "the following arguments are required: --key"),
        (["cache", "restore", "x", "--key", "k-{nope}"], "unknown placeholder"),
        (["cache", "save", "x", "--key", "k", "--store", "ftp://h/x"], "unsupported store URL"),
        (["cache", "prune", "--max-size", "lots"], "not a size"),
        (["cache", "prune", "--max-age", "soon"], "not a duration"),
        (["cache", "frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, job, capsys, monkeypatch):
    workspace, env = job
    monkeypatch.chdir(workspace)
    assert main(args, env=env) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_prune_keeps_the_last_n_of_each_family_outside_protected_scopes(job):
    workspace, env = job
    store = LocalStore(Path(env["CI_INTEGRATION_CACHE_DIR"]))
    feature = {**env, "BRANCH_NAME": "feature", "BRANCH_IS_PRIMARY": ""}
    for job_env in (env, feature):
        for version in range(3):
            fill(workspace / "deps", files=2, size=1000)
            cli(workspace, job_env, "cache", "save", "deps", "--key", f"deps-{version}")
            cli(workspace, job_env, "cache", "save", "deps", "--key", f"tools-{version}")
            time.sleep(0.02)
    result = json.loads(cli(workspace, env, "cache", "prune", "--keep-last", "1",
                            "--json").stdout)  # fmt: skip
    feature_scope = next(e.scope for e in store.list_entries() if e.scope != "branch-main")
    assert sorted(result["removed_entries"]) == sorted(
        f"{feature_scope}/{name}-{n}" for name in ("deps", "tools") for n in (0, 1)
    )
    assert sorted(e.key for e in store.list_entries(feature_scope)) == ["deps-2", "tools-2"]
    assert len(store.list_entries("branch-main")) == 6
    bad = cli(workspace, env, "cache", "prune", "--keep-last", "0", check=False)
    assert bad.returncode == 2 and "of 1 or more" in bad.stderr


def test_restoring_the_working_folder_is_refused_unless_merged(job):
    workspace, env = job
    fill(workspace / "dist", files=2)
    (workspace / "notes.txt").write_text("the job's own file")
    cli(workspace, env, "cache", "save", ".", "--key", "here")
    (workspace / "dist" / "0.bin").unlink()
    refused = cli(workspace, env, "cache", "restore", ".", "--key", "here", check=False)
    assert refused.returncode == 2
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "restoring . would replace the working folder itself: pass --merge to extract"
            " into it, or restore into a subfolder"
        )
    )
    assert not (workspace / "dist" / "0.bin").exists()
    (workspace / "later.txt").write_text("made after the save")
    merged = json.loads(
        cli(workspace, env, "cache", "restore", ".", "--key", "here", "--merge", "--json").stdout
    )
    assert merged["cache_hit"] and merged["removed_files"] == 0
    assert (workspace / "dist" / "0.bin").exists()
    assert (workspace / "later.txt").read_text() == "made after the save"
    assert Path.cwd().exists()


def test_glob_paths_come_back_where_they_were_found(job, tmp_path):
    workspace, env = job
    for package in ["web", "api", "api/vendor/tool"]:
        fill(workspace / package / "node_modules", files=2, size=1000)
    fill(workspace / "docs" / "node_modules", files=1, size=10)
    patterns = ["**/node_modules", "!docs/node_modules"]
    saved = json.loads(
        cli(workspace, env, "cache", "save", *patterns, "--key", "modules", "--json").stdout
    )
    assert saved["files"] == 6  # api's inner node_modules went with api's own
    before = {p: p.read_bytes() for p in workspace.rglob("*.bin")}
    fresh = tmp_path / "fresh"
    (fresh / "web").mkdir(parents=True)
    restored = json.loads(
        cli(fresh, env, "cache", "restore", *patterns, "--key", "modules", "--json").stdout
    )
    assert restored["cache_hit"] and restored["files"] == 6
    after = {workspace / p.relative_to(fresh): p.read_bytes() for p in fresh.rglob("*.bin")}
    assert after == {p: data for p, data in before.items() if "docs" not in p.parts}
    # Other patterns are another entry, as with actions/cache.
    other = json.loads(
        cli(fresh, env, "cache", "restore", "**/node_modules", "--key", "modules", "--json").stdout
    )
    assert other["cache_hit_kind"] == "miss"


def test_an_empty_folder_does_not_replace_an_entry_with_files_unless_asked(job):
    workspace, env = job
    fill(workspace / "deps", files=3)
    cli(workspace, env, "cache", "save", "deps", "--key", "deps")
    shutil.rmtree(workspace / "deps")
    (workspace / "deps").mkdir()
    kept = cli(workspace, env, "cache", "save", "deps", "--key", "deps", "--json")
    assert json.loads(kept.stdout)["saved"] is False
    assert json.loads(kept.stdout)["reason"] == "empty"
    assert "not saving deps: deps hold no files, and the entry holds 3" in kept.stderr
    assert kept.stderr.count(f"cache store: file://{env['CI_INTEGRATION_CACHE_DIR']}\n") == 1
    fresh = workspace / "fresh"
    fresh.mkdir()
    restored = cli(fresh, env, "cache", "restore", "deps", "--key", "deps", "--json")
    assert json.loads(restored.stdout)["files"] == 3
    replaced = cli(workspace, env, "cache", "save", "deps", "--key", "deps", "--allow-empty",
                   "--json")  # fmt: skip
    assert json.loads(replaced.stdout)["saved"] is True
    again = cli(fresh, env, "cache", "restore", "deps", "--key", "deps", "--json")
    assert json.loads(again.stdout)["files"] == 0


def test_a_2_gib_save_in_a_ci_log_says_how_far_it_is(job):
    """No terminal: lines with the total, the share done, the rate and the time left."""
    workspace, env = job
    (workspace / "big").mkdir()
    for index, size in enumerate([2 * 1024**3 - 1024**2, 1024**2]):  # sparse: little on disk
        with open(workspace / "big" / f"{index}.bin", "wb") as file:
            file.truncate(size)
    env = {**env, "CI_INTEGRATION_PROGRESS_SECONDS": "0.5"}
    done = cli(workspace, env, "cache", "save", "big", "--key", "big")
    lines = [line for line in done.stderr.splitlines() if line.startswith("saving big: ")]
    assert len(lines) >= 2, done.stderr
    shape = re.compile(r"saving big: .* of 2\.0 GiB \((\d+)%\), .*/s, (\d+ s|\?) left")
    shares = [int(shape.fullmatch(line).group(1)) for line in lines]
    # Counted piece by piece, not file by file: the 2 GiB file shows it moving.
    assert shares == sorted(shares) and len(set(shares)) >= 2 and shares[-1] <= 100
    bad = cli(workspace, {**env, "CI_INTEGRATION_PROGRESS_SECONDS": "soon"}, "context")
    assert "CI_INTEGRATION_PROGRESS_SECONDS=soon is not a number of seconds above 0" in bad.stderr
