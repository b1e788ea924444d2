"""gha:// at GitHub's scale and limits, against the loopback cache service
(tests/store/gha_twirp_service.py, its bytes in azurite): a save makes a bounded number
of cache entries and a restore a bounded number of lookups whatever their size, jobs
saving at once ride out the upload limit, the job's cache mode and the service's
refusals are obeyed, and a prune through the REST API keeps what live entries need.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ci_integration.cli import main
from tests.store.gha_twirp_service import job_env, rest_env
from tests.unit.test_dircache import snapshot


def cli(args: list[str], env: dict[str, str], capsys) -> tuple[int, dict, str]:
    code = main([*args, "--store", "gha://", "--json"], env=env)
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


@pytest.fixture
def job(twirp_service, base_env, tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for index in range(20):
        (tmp_path / "data" / f"{index}.bin").write_bytes(os.urandom(50_000))
    return {**base_env, **job_env(twirp_service), "BRANCH_NAME": "main",
            "JENKINS_URL": "https://ci.example.com/"}  # fmt: skip


def calls(service, method: str) -> int:
    return sum(1 for seen, _ in service.seen if seen == method)


def test_a_read_only_job_never_tries_to_save(twirp_service, job, capsys):
    read_only = {**job, "ACTIONS_CACHE_MODE": "read-only"}
    code, saved, err = cli(["cache", "save", "data", "--key", "k"], read_only, capsys)
    assert code == 0 and not saved["saved"]
    assert "not saving k: this job is read-only (ACTIONS_CACHE_MODE is read-only)" in err
    assert calls(twirp_service, "CreateCacheEntry") == 0
    assert cli(["cache", "save", "data", "--key", "k"], job, capsys)[1]["saved"]
    code, restored, _ = cli(["cache", "restore", "data", "--key", "k"], read_only, capsys)
    assert code == 0 and restored["cache_hit_kind"] == "exact"


def test_a_write_only_job_never_tries_to_restore(twirp_service, job, capsys):
    assert cli(["cache", "save", "data", "--key", "k"], job, capsys)[1]["saved"]
    before = calls(twirp_service, "GetCacheEntryDownloadURL")
    write_only = {**job, "ACTIONS_CACHE_MODE": "write-only"}
    code, restored, err = cli(["cache", "restore", "data", "--key", "k"], write_only, capsys)
    assert code == 0 and restored["cache_hit_kind"] == "miss"
    assert "not reading the cache: this job is write-only (ACTIONS_CACHE_MODE is write-only)" in err
    assert calls(twirp_service, "GetCacheEntryDownloadURL") == before
    Path("data", "new.txt").write_text("new")
    code, saved, _ = cli(["cache", "save", "data", "--key", "k2"], write_only, capsys)
    assert code == 0 and saved["saved"]
    assert calls(twirp_service, "GetCacheEntryDownloadURL") == before


def test_an_unknown_cache_mode_is_a_usage_error(job, capsys):
    code, _, err = cli(["cache", "save", "data", "--key", "k"],
                       {**job, "ACTIONS_CACHE_MODE": "sometimes"}, capsys)  # fmt: skip
    said = [line for line in err.splitlines() if not line.startswith("cache store: ")]
    assert code == 2 and len(said) == 1 and "ACTIONS_CACHE_MODE is 'sometimes'" in said[0]


def test_saves_and_restores_stay_within_a_few_entries_and_lookups(twirp_service, job, capsys):
    """Each save: one bundle, the entry, its family index; each restore: the entry and
    its bundles, at most three lookups over any number of generations."""
    expected = None
    for generation in range(6):
        Path("data", f"{generation}.bin").write_bytes(os.urandom(60_000))
        created = calls(twirp_service, "CreateCacheEntry")
        code, saved, _ = cli(["cache", "save", "data", "--key", f"k-{generation}"], job, capsys)
        assert code == 0 and saved["saved"]
        assert calls(twirp_service, "CreateCacheEntry") - created <= 3
        expected = snapshot(Path("data"))
        Path("data").rename(f"before-{generation}")
        lookups = calls(twirp_service, "GetCacheEntryDownloadURL")
        code, restored, _ = cli(["cache", "restore", "data", "--key", f"k-{generation}"], job,
                                capsys)  # fmt: skip
        assert code == 0 and restored["cache_hit_kind"] == "exact"
        assert calls(twirp_service, "GetCacheEntryDownloadURL") - lookups <= 3
        assert snapshot(Path("data")) == expected


GIB_FILES = 64  # of 16 MiB: 1 GiB


@pytest.mark.xdist_group("gigabyte")  # one gigabyte test at a time: see test_remote_faults
def test_a_1gb_save_is_3_cache_entries_at_most_and_its_restore_3_lookups(
    twirp_service, job, capsys, tmp_path
):
    big = tmp_path / "big"
    big.mkdir()
    for index in range(GIB_FILES):
        (big / f"{index}.bin").write_bytes(os.urandom(16 * 1024 * 1024))
    code, saved, _ = cli(["cache", "save", "big", "--key", "gib"], job, capsys)
    assert code == 0 and saved["saved"] and saved["uploaded_bytes"] > 1024**3
    assert calls(twirp_service, "CreateCacheEntry") <= 3
    big.rename(tmp_path / "saved")
    lookups = calls(twirp_service, "GetCacheEntryDownloadURL")
    code, restored, _ = cli(["cache", "restore", "big", "--key", "gib"], job, capsys)
    assert code == 0 and restored["cache_hit_kind"] == "exact" and restored["bytes"] == 1024**3
    assert calls(twirp_service, "GetCacheEntryDownloadURL") - lookups <= 3
    for index in range(0, GIB_FILES, 9):
        name = f"{index}.bin"
        assert (big / name).read_bytes() == (tmp_path / "saved" / name).read_bytes()


def test_16_jobs_saving_at_once_all_save_under_the_limit_or_through_its_429s(
    twirp_service, job, tmp_path
):
    """Each job saves its own folder at the same moment, as a matrix does: at GitHub's
    200 a minute none is refused; at 20 per 10 s they are, and every job waits out
    the 429s (Retry-After) and saves all the same."""
    folders = []
    for number in range(16):
        folder = tmp_path / f"job-{number}"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "own.bin").write_bytes(os.urandom(300_000))
        folders.append(folder)
    env = {**job, "PATH": os.environ["PATH"]}

    def saves(key: str) -> list[subprocess.CompletedProcess]:
        started = [subprocess.Popen([sys.executable, "-m", "ci_integration", "cache", "save",
                                     "data", "--key", key, "--store", "gha://", "--strict",
                                     "--json"], cwd=folder, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
                   for folder in folders]  # fmt: skip
        return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate())
                for p in started]  # fmt: skip

    for done in saves("free"):
        assert done.returncode == 0 and json.loads(done.stdout)["saved"], done.stderr
    assert twirp_service.throttled == 0
    assert calls(twirp_service, "CreateCacheEntry") <= 16 * 3

    twirp_service.uploads_per_minute, twirp_service.rate_window = 20, 10
    for folder in folders:
        (folder / "data" / "more.bin").write_bytes(os.urandom(100_000))
    for done in saves("throttled"):
        assert done.returncode == 0 and json.loads(done.stdout)["saved"], done.stderr
    assert twirp_service.throttled > 0
    # Each job's entry is whole: the last one's comes back exact.
    code, restored, _ = cli_in(folders[-1], ["cache", "restore", "data", "--key", "throttled"],
                               env)  # fmt: skip
    assert code == 0 and restored["cache_hit_kind"] == "exact"


def cli_in(folder: Path, args: list[str], env: dict[str, str]) -> tuple[int, dict, str]:
    done = subprocess.run([sys.executable, "-m", "ci_integration", *args, "--store", "gha://",
                           "--json"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    return done.returncode, json.loads(done.stdout or "{}"), done.stderr


def test_prune_through_the_rest_api_keeps_what_live_entries_need(twirp_service, job, capsys,
                                                                 monkeypatch):  # fmt: skip
    """Superseded saves, entries past --max-age and the bundles only they named go;
    the live entry and every bundle it names stay, and it restores exact."""
    env = {**job, **rest_env(twirp_service)}
    two_days_ago = time.time() - 2 * 86400
    twirp_service.clock = lambda: two_days_ago
    assert cli(["cache", "save", "data", "--key", "k"], env, capsys)[1]["saved"]
    Path("other").mkdir()
    Path("other", "alone.bin").write_bytes(os.urandom(80_000))
    assert cli(["cache", "save", "other", "--key", "stale"], env, capsys)[1]["saved"]
    twirp_service.clock = time.time
    Path("data", "new.bin").write_bytes(os.urandom(70_000))
    again = cli(["cache", "save", "data", "--key", "k"], env, capsys)[1]
    assert again["saved"] and again["reused_from"] == ["branch-main/k"]  # the old bundle: live
    before = {key for key, _ in twirp_service.entries}

    code, listed, _ = cli(["cache", "list"], env, capsys)
    assert code == 0 and sorted(row["key"] for row in listed) == ["k", "stale"]
    code, pruned, err = cli(["cache", "prune", "--max-age", "1d", "--protect", ""], env, capsys)
    assert code == 0 and pruned["removed_entries"] == ["branch-main/stale"], err
    after = {key for key, _ in twirp_service.entries}
    gone = before - after
    # Both saves of stale (entry, family index), the older of k, and stale's bundle.
    assert sorted(key.split(":")[0] for key in gone if ":" in key) == [
        "ci-integration-entry", "ci-integration-entry", "ci-integration-family",
        "ci-integration-family"]  # fmt: skip
    entries_left = [key for key in after if key.startswith("ci-integration-entry:")]
    assert len(entries_left) == 1 and ":k:" in entries_left[0]  # the newest save of k only
    families_left = [key for key in after if key.startswith("ci-integration-family:")]
    assert len(families_left) == 1 and ":k:" in families_left[0]
    bundles_gone = [key for key in gone if key.startswith("ci-integration-bundle-")]
    assert len(bundles_gone) == 1  # stale's own; both of k's stay

    Path("data").rename("saved")
    code, restored, _ = cli(["cache", "restore", "data", "--key", "k"], env, capsys)
    assert code == 0 and restored["cache_hit_kind"] == "exact"
    assert snapshot(Path("data")) == snapshot(Path("saved"))


def test_without_a_rest_token_prune_removes_nothing_and_says_what_to_set(twirp_service, job,
                                                                        capsys):  # fmt: skip
    assert cli(["cache", "save", "data", "--key", "k"], job, capsys)[1]["saved"]
    before = set(twirp_service.entries)
    code, pruned, err = cli(["cache", "prune", "--max-age", "0", "--protect", ""], job, capsys)
    assert code == 0 and pruned["removed_entries"] == [] and "GITHUB_TOKEN" in err
    assert set(twirp_service.entries) == before


@pytest.mark.parametrize(
    ("refusal", "action", "meaning"),
    [("deny_write", "save", "this job may not write to the cache (refused by the repository's"),
     ("insufficient_usage", "save", "the repository's cache storage is over its limit"),
     ("deny_read", "restore", "this job may not read the cache (refused by the repository's")],
)  # fmt: skip
def test_the_service_s_refusals_are_one_line_warnings_that_say_why(
    twirp_service, job, capsys, refusal, action, meaning
):
    assert cli(["cache", "save", "data", "--key", "k"], job, capsys)[1]["saved"]
    setattr(twirp_service, refusal, True)
    Path("data", "changed.bin").write_bytes(os.urandom(1000))
    code, result, err = cli(["cache", action, "data", "--key", "k"], job, capsys)
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert code == 0 and len(warnings) == 1 and meaning in warnings[0], err
    assert "token was refused" not in err
    assert result.get("saved") is False or result.get("cache_hit_kind") == "miss"
    code, _, err = cli(["cache", action, "data", "--key", "k", "--strict"], job, capsys)
    assert code == 3 and meaning in err
