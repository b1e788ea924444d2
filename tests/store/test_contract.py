"""What every store backend promises, checked the same way on each (conftest.BACKENDS):
folders come back exactly, scopes fall back and never leak, concurrent and broken
saves leave the store whole, and prune keeps every remaining entry restorable.

Backends keep times as coarse as a second (S3's LastModified): tests that need one
entry older than another wait just over a second between them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from ci_integration import dircache
from ci_integration.archive import pack
from ci_integration.cli import main
from ci_integration.errors import CorruptDataError
from ci_integration.store.manifest import Manifest
from ci_integration.store.prune import prune
from ci_integration.store.scoped import ScopedStore
from tests.unit.test_dircache import make_tree, snapshot

MAIN = ["branch-main"]
CANNOT_LIST = "the backend can neither list nor delete (the GitHub cache)"
FEATURE = ["branch-feature", "branch-main"]
PR = ["pr-7", "branch-feature", "branch-main"]
TAG = ["tag-v1.2.0", "branch-main"]  # a tag build reads the default branch's cache
TIME_STEP = 1.2  # over the coarsest clock a backend keeps


def save(store, chain, key, root: Path, prefixes=()):
    with store.lock(exclusive=False):
        return dircache.save(ScopedStore(store, chain), key, ["data"], [root], prefixes)


def restore(store, chain, key, root: Path, restore_keys=()):
    with store.lock(exclusive=False):
        return dircache.restore(ScopedStore(store, chain), key, restore_keys, ["data"], [root])


def fill(folder: Path, files: int, size: int, tag: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        (folder / f"{index}.bin").write_bytes(os.urandom(size))
    (folder / "who").write_text(tag)
    return folder


def test_round_trip_through_the_cli(backend, tmp_path, monkeypatch, capsys, base_env):
    jenkins = backend.env.get("JENKINS_URL", "https://ci.example.com/")  # jenkins:// reads it
    env = {**base_env, **backend.env, "JENKINS_URL": jenkins,
           "BRANCH_NAME": "main", "BRANCH_IS_PRIMARY": "true"}  # fmt: skip
    first, second = tmp_path / "job1", tmp_path / "job2"
    expected = snapshot(make_tree(first / "data"))
    second.mkdir()
    store_args = ["--store", backend.url, "--strict", "--json"]

    monkeypatch.chdir(first)
    assert main(["cache", "save", "data", "--key", "k-{os}", *store_args], env=env) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["saved"] and saved["files"] == 5 and saved["scope"] == "branch-main"

    monkeypatch.chdir(second)
    assert main(["cache", "restore", "data", "--key", "k-{os}", *store_args], env=env) == 0
    restored = json.loads(capsys.readouterr().out)
    assert (restored["cache_hit_kind"], restored["matched_key"]) == ("exact", saved["key"])
    assert snapshot(second / "data") == expected

    if not backend.can_list:
        return
    assert main(["cache", "list", "--store", backend.url, "--json"], env=env) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(row["scope"], row["key"]) for row in listed] == [("branch-main", saved["key"])]


def mixed_folder(root: Path) -> Path:
    """60 files of 1 MiB and 1,500 small ones, as a dependency folder has them."""
    for index in range(60):
        (root / "big").mkdir(parents=True, exist_ok=True)
        (root / "big" / f"{index}.bin").write_bytes(os.urandom(1024 * 1024))
    for index in range(1500):
        (root / "small" / f"{index % 30}").mkdir(parents=True, exist_ok=True)
        (root / "small" / f"{index % 30}" / f"{index}.txt").write_bytes(os.urandom(200 + index))
    return root


def change_two_percent(root: Path) -> None:
    """About 2 % of the bytes: one big file, 30 small ones, one small one more."""
    (root / "big" / "7.bin").write_bytes(os.urandom(1024 * 1024))
    for index in range(0, 1500, 50):
        (root / "small" / f"{index % 30}" / f"{index}.txt").write_bytes(os.urandom(300))
    (root / "small" / "0" / "new.txt").write_text("new\n")


@pytest.mark.parametrize("how", ["newest-alike", "restored-by-the-job"])
def test_a_save_under_an_unrelated_key_uploads_only_what_changed(backend, tmp_path,
                                                                 monkeypatch, capsys, base_env,
                                                                 how):  # fmt: skip
    """The key a workflow writes (``deps-${{ hashFiles(...) }}``) shares no prefix with
    the last one: the save still finds the pieces, through the newest entry holding
    the same paths, or through what the job restored."""
    jenkins = backend.env.get("JENKINS_URL", "https://ci.example.com/")
    env = {**base_env, **backend.env, "JENKINS_URL": jenkins,
           "BRANCH_NAME": "main", "BRANCH_IS_PRIMARY": "true"}  # fmt: skip
    store_args = ["--store", backend.url, "--strict", "--json"]
    workspace = tmp_path / "job"
    mixed_folder(workspace / "deps")
    monkeypatch.chdir(workspace)

    def cli(*args: str) -> dict:
        assert main([*args, *store_args], env=env) == 0
        return json.loads(capsys.readouterr().out)

    first = cli("cache", "save", "deps", "--key", "deps-aaa")
    assert first["saved"] and first["uploaded_bytes"] > 60 * 1024 * 1024
    if how == "restored-by-the-job":
        # Another folder name: no entry holds these paths, only the job's restore helps.
        restored = cli("cache", "restore", "deps", "--key", "deps-aaa")
        assert restored["cache_hit_kind"] == "exact"
        (workspace / "deps").rename(workspace / "vendor")
        paths = "vendor"
    else:
        paths = "deps"
    change_two_percent(workspace / paths)
    second = cli("cache", "save", paths, "--key", "lock-bbb")
    assert second["saved"] and second["reused_from"] == ["branch-main/deps-aaa"]
    assert second["uploaded_bytes"] < 0.05 * first["uploaded_bytes"]
    assert second["new_bytes"] < 0.05 * (second["new_bytes"] + second["reused_bytes"])
    if backend.can_list:
        stored = sum(blob.size for blob in backend.open().list_blobs())
        assert stored < 1.05 * first["uploaded_bytes"] + 64 * 1024  # two manifests' slack

    (workspace / paths).rename(workspace / "saved")
    restored = cli("cache", "restore", paths, "--key", "lock-bbb")
    assert restored["cache_hit_kind"] == "exact"
    assert snapshot(workspace / paths) == snapshot(workspace / "saved")


def test_last_use_is_recorded_without_rewriting_the_entry(backend, store, tmp_path):
    if not backend.can_list:
        pytest.skip(CANNOT_LIST)
    save(store, MAIN, "k", make_tree(tmp_path / "source"))
    [before] = store.list_entries()
    manifest = store.get_entry("branch-main", "k")
    assert abs(before.last_used - before.created) < TIME_STEP and before.size == len(manifest)
    time.sleep(TIME_STEP)
    restore(store, MAIN, "k", tmp_path / "restored")
    [after] = store.list_entries("branch-main")
    assert after.created == before.created and after.last_used > before.created
    assert store.get_entry("branch-main", "k") == manifest
    assert store.list_entries("branch-other") == []


def test_fallback_along_the_scope_chain(store, tmp_path):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "deps-main-1", source)
    (source / "a.txt").write_text("feature\n")
    save(store, FEATURE, "deps-feature-1", source)

    own = restore(store, FEATURE, "deps-feature-1", tmp_path / "r0")
    assert (own.hit, own.scope) == ("exact", "branch-feature")
    # A PR finds its target branch's entry first, then the default branch's.
    assert restore(store, PR, "deps-pr", tmp_path / "r1", ["deps-"]).scope == "branch-feature"
    assert (tmp_path / "r1" / "a.txt").read_text() == "feature\n"
    assert restore(store, PR, "deps-pr", tmp_path / "r2", ["deps-main"]).scope == "branch-main"
    # An exact key wins over a prefix, in whatever scope of the chain it is.
    exact = restore(store, PR, "deps-main-1", tmp_path / "r3", ["deps-"])
    assert (exact.hit, exact.scope) == ("exact", "branch-main")
    # The default branch never reads a feature branch's entries.
    assert restore(store, MAIN, "deps-pr", tmp_path / "r4", ["deps-feature"]).hit == "miss"
    assert not (tmp_path / "r4").exists()


def test_newest_entry_wins_among_prefix_matches(store, tmp_path):
    source = fill(tmp_path / "source", files=2, size=1000, tag="first")
    save(store, MAIN, "deps-1", source)
    time.sleep(TIME_STEP)
    (source / "who").write_text("second")
    save(store, MAIN, "deps-2", source)
    assert restore(store, MAIN, "deps-3", tmp_path / "r1", ["deps-"]).key == "deps-2"
    time.sleep(TIME_STEP)
    (source / "who").write_text("third")
    save(store, MAIN, "deps-1", source)  # saved again: now the newest
    assert restore(store, MAIN, "deps-3", tmp_path / "r2", ["deps-"]).key == "deps-1"
    assert (tmp_path / "r2" / "who").read_text() == "third"


@pytest.mark.parametrize("writer", [PR, TAG], ids=["pull-request", "tag"])
def test_another_scope_cannot_overwrite_the_default_branch(store, tmp_path, writer):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "k", source)
    before = store.get_entry("branch-main", "k")
    (source / "a.txt").write_text("poison\n")
    assert save(store, writer, "k", source).scope == writer[0]
    assert store.get_entry("branch-main", "k") == before
    scoped = ScopedStore(store, writer)
    manifest = scoped.read_entry(writer[0], "k", "directory")
    forged = Manifest(manifest.kind, "k", "branch-main", manifest.blobs, manifest.metadata)
    with pytest.raises(Exception, match="cannot write branch-main"):
        scoped.commit(forged)
    restore(store, MAIN, "k", tmp_path / "main-view")
    assert (tmp_path / "main-view" / "a.txt").read_text() == "alpha\n"


def test_eight_concurrent_writers_leave_one_valid_entry(backend, tmp_path):
    sources = [fill(tmp_path / f"w{n}", files=10, size=200_000, tag=str(n)) for n in range(8)]
    start = threading.Barrier(8, timeout=60)
    failures: list[BaseException] = []

    def writer(source: Path) -> None:
        try:
            store = backend.open()  # each writer a job of its own
            start.wait()
            save(store, MAIN, "shared", source)
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(source,)) for source in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads) and failures == []
    store = backend.open()
    if backend.can_list:
        assert [(e.scope, e.key) for e in store.list_entries()] == [("branch-main", "shared")]
    restore(store, MAIN, "shared", tmp_path / "restored")
    winner = int((tmp_path / "restored" / "who").read_text())
    assert snapshot(tmp_path / "restored") == snapshot(sources[winner])


def test_packs_are_compressed_at_the_stores_level(backend, store, tmp_path):
    """A folder store on this machine trades bytes for the CPU a save waits on; a store
    across a network the other way round."""
    import zstandard

    from ci_integration.store import base

    source = tmp_path / "source"
    source.mkdir()
    words = [os.urandom(4).hex() for _ in range(2000)]
    for index in range(8):
        (source / f"{index}.txt").write_text(" ".join(words[(index * 7 + i * 13) % 2000]
                                                      for i in range(200_000)))  # fmt: skip
    save(store, MAIN, "text", source)
    manifest = ScopedStore(store, MAIN).read_entry("branch-main", "text", dircache.KIND)
    packs = [blob for blob in manifest.blobs if blob.digest != manifest.metadata["tree"]]
    assert packs
    for blob in packs:
        stored = store.get_blob(blob.digest)
        raw = zstandard.ZstdDecompressor().decompress(stored)
        assert zstandard.ZstdCompressor(store.compression_level).compress(raw) == stored
    local = backend.url.startswith("file://")
    expected = base.LOCAL_COMPRESSION_LEVEL if local else base.REMOTE_COMPRESSION_LEVEL
    assert store.compression_level == expected


def test_an_interrupted_save_leaves_no_entry_and_the_next_save_works(backend, store, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    source = fill(tmp_path / "source", files=6, size=8_000_000)  # three packs or more
    upload = pack.Packer._pack_and_upload
    done, lock = [0], threading.Lock()

    def upload_then_fail(self, buffer, size, pieces):
        with lock:
            done[0] += 1
            if done[0] > 1:
                raise RuntimeError("killed mid-save")
        return upload(self, buffer, size, pieces)

    monkeypatch.setattr(pack.Packer, "_pack_and_upload", upload_then_fail)
    with pytest.raises(RuntimeError, match="killed mid-save"):
        save(store, MAIN, "big", source)
    assert store.get_entry("branch-main", "big") is None
    if backend.can_list:
        assert store.list_entries() == []
        assert list(store.list_blobs())  # the first pack was written

    monkeypatch.setattr(pack.Packer, "_pack_and_upload", upload)
    assert save(store, MAIN, "big", source).saved
    restore(store, MAIN, "big", tmp_path / "restored")
    assert snapshot(tmp_path / "restored") == snapshot(source)


def test_a_corrupt_blob_is_a_miss_and_is_removed(backend, store, tmp_path):
    if not backend.can_list:
        pytest.skip(CANNOT_LIST)
    save(store, MAIN, "k", make_tree(tmp_path / "source"))
    biggest = max(store.list_blobs(), key=lambda blob: blob.size)
    store.put_blob(biggest.digest, b"overwritten behind the cache's back")
    target = tmp_path / "r"
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(CorruptDataError, match="corrupt and was removed"):
        restore(store, MAIN, "k", target)
    assert not store.has_blob(biggest.digest)
    assert [p.name for p in target.iterdir()] == ["keep"]
    with pytest.raises(CorruptDataError, match="missing from the store"):
        restore(store, MAIN, "k", target)


def test_unchanged_save_uploads_nothing(backend, store, tmp_path):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "k", source)
    blobs_before = sorted(b.digest for b in store.list_blobs())
    again = save(store, MAIN, "k", source)
    assert again.unchanged and again.uploaded_bytes == 0 and again.new_bytes == 0
    if backend.can_list:
        assert sorted(b.digest for b in store.list_blobs()) == blobs_before


def test_prune_by_age_and_size_keeps_every_remaining_entry_whole(backend, store, tmp_path):
    if not backend.can_list:
        pytest.skip(CANNOT_LIST)
    for name in ("a", "b", "c"):  # about 1 MiB each, incompressible
        save(store, MAIN, name, fill(tmp_path / name, files=10, size=100_000, tag=name))
        time.sleep(TIME_STEP)
    restore(store, MAIN, "a", tmp_path / "restored-a")  # now the most recently used
    used = {e.key: e.last_used for e in store.list_entries()}
    assert used["b"] < used["c"] < used["a"]

    by_size = prune(store, max_size=int(2.5 * 1024 * 1024))
    assert [e.key for e in by_size.removed_entries] == ["b"]
    now = time.time()
    by_age = prune(store, max_age=now - (used["a"] + used["c"]) / 2, now=now)
    assert [e.key for e in by_age.removed_entries] == ["c"]
    # Past the grace period every blob no entry names goes, and only those.
    prune(store, now=time.time() + store.blob_grace_seconds + 60)

    [left] = store.list_entries()
    manifest = Manifest.from_json(store.get_entry(left.scope, left.key))
    assert {b.digest for b in store.list_blobs()} == {b.digest for b in manifest.blobs}
    outcome = restore(store, MAIN, "a", tmp_path / "again")
    assert outcome.hit == "exact" and snapshot(tmp_path / "again") == snapshot(tmp_path / "a")


def test_the_next_save_repairs_an_entry_that_lost_a_blob(backend, store, tmp_path):
    if not backend.can_list:
        pytest.skip(CANNOT_LIST)
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "k", source)
    manifest = Manifest.from_json(store.get_entry("branch-main", "k"))
    lost = next(b.digest for b in manifest.blobs if b.digest != manifest.metadata["tree"])
    store.delete_blob(lost)
    save(store, MAIN, "k", source)
    restore(store, MAIN, "k", tmp_path / "restored")
    assert snapshot(tmp_path / "restored") == snapshot(source)
