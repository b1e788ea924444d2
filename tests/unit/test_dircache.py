"""Folders through the local store, on real files: what is saved comes back
exactly, from the right scope, and nothing bad gets written."""

from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ci_integration import dircache
from ci_integration.archive.tree import Tree
from ci_integration.cache_paths import CachePaths
from ci_integration.errors import CorruptDataError, UsageError
from ci_integration.store.local import LocalStore
from ci_integration.store.manifest import BlobRef, Manifest
from ci_integration.store.scoped import ScopedStore
from tests.support.page_cache import need_evictable, need_fincore, resident

MAIN = ["branch-main"]
FEATURE = ["branch-feature", "branch-main"]
PR = ["pr-7", "branch-feature", "branch-main"]


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything restore promises to recreate: type, content, mode and mtime."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                seen[str(path.relative_to(root))] = ("link", os.readlink(path), info.st_mtime_ns)
            elif stat.S_ISDIR(info.st_mode):
                seen[str(path.relative_to(root))] = (
                    "dir",
                    stat.S_IMODE(info.st_mode),
                    info.st_mtime_ns,
                )
            else:
                seen[str(path.relative_to(root))] = (
                    "file",
                    path.read_bytes(),
                    stat.S_IMODE(info.st_mode),
                    info.st_mtime_ns,
                )
    return seen


def make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(10_000_000))  # three pieces
    (root / "sub" / "deeper" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "sub" / "deeper" / "run.sh", 0o755)
    (root / "same-as-a.txt").write_text("alpha\n")
    (root / "zero").write_bytes(b"")
    os.symlink("sub/deeper/run.sh", root / "link")
    os.symlink("missing-target", root / "dangling")
    os.chmod(root / "empty", 0o750)
    for index, path in enumerate(sorted(root.rglob("*"))):
        os.utime(
            path,
            ns=(1_600_000_000_000_000_000 + index, 1_600_000_000_000_000_000 + index),
            follow_symlinks=False,
        )
    return root


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def save(store, chain, key, root: Path, prefixes=()):
    return dircache.save(ScopedStore(store, chain), key, ["data"], [root], prefixes)


def restore(store, chain, key, root: Path, restore_keys=()):
    return dircache.restore(ScopedStore(store, chain), key, restore_keys, ["data"], [root])


def test_round_trip_keeps_files_links_folders_modes_and_times(store, tmp_path):
    source = make_tree(tmp_path / "source")
    expected = snapshot(source)
    result = save(store, MAIN, "k", source)
    assert result.saved and result.files == 5
    target = tmp_path / "restored"
    outcome = restore(store, MAIN, "k", target)
    assert outcome.hit == "exact" and outcome.key == "k" and outcome.scope == "branch-main"
    assert snapshot(target) == expected
    assert os.stat(target).st_mtime_ns == os.stat(source).st_mtime_ns


def test_restore_replaces_the_folder_whole_and_leaves_no_temp(store, tmp_path):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "k", source)
    target = tmp_path / "work" / "data"
    target.mkdir(parents=True)
    (target / "stale").write_text("from an earlier job")
    restore(store, MAIN, "k", target)
    assert not (target / "stale").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["data"]


def test_fallback_along_the_scope_chain(store, tmp_path):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "deps-main-1", source)
    (source / "a.txt").write_text("feature\n")
    save(store, FEATURE, "deps-feature-1", source)

    # A PR finds its target branch's entry first, then the default branch's.
    assert restore(store, PR, "deps-pr", tmp_path / "r1", ["deps-"]).scope == "branch-feature"
    # An exact key wins over a prefix, in whatever scope of the chain it is.
    exact = restore(store, PR, "deps-main-1", tmp_path / "r2", ["deps-"])
    assert (exact.hit, exact.scope) == ("exact", "branch-main")
    # The default branch never reads a feature branch's entries.
    assert restore(store, MAIN, "deps-pr", tmp_path / "r3", ["deps-feature"]).hit == "miss"
    assert not (tmp_path / "r3").exists()


def test_newest_entry_wins_among_prefix_matches(store, tmp_path):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "deps-1", source)
    os.utime(store.entries / "branch-main" / "deps-1.json", (1, 1))
    save(store, MAIN, "deps-2", source)
    assert restore(store, MAIN, "deps-3", tmp_path / "r", ["deps-"]).key == "deps-2"


def test_a_pull_request_cannot_overwrite_the_default_branch(store, tmp_path):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "k", source)
    before = store.get_entry("branch-main", "k")
    (source / "a.txt").write_text("poison\n")
    result = save(store, PR, "k", source)
    assert result.scope == "pr-7"
    assert store.get_entry("branch-main", "k") == before
    scoped = ScopedStore(store, PR)
    manifest = scoped.read_entry("pr-7", "k", "directory")
    forged = Manifest(manifest.kind, "k", "branch-main", manifest.blobs, manifest.metadata)
    with pytest.raises(Exception, match="cannot write branch-main"):
        scoped.commit(forged)
    restore(store, MAIN, "k", tmp_path / "main-view")
    assert (tmp_path / "main-view" / "a.txt").read_text() == "alpha\n"


def test_a_restore_hands_back_the_page_cache_it_took_for_blobs(store, tmp_path):
    """Blobs a restore brought into memory leave it; blobs already there stay there."""
    need_fincore()
    source = tmp_path / "source"
    source.mkdir()
    for index in range(30):
        (source / f"f{index:02}.o").write_bytes(os.urandom(300_000))
    save(store, MAIN, "k", source)
    blobs = sorted(path for path in store.blobs.rglob("*") if path.is_file())
    need_evictable(blobs)
    restore(store, MAIN, "k", tmp_path / "cold")
    assert sum(map(resident, blobs)) == 0
    for path in blobs:
        path.read_bytes()  # cached, as right after a save, or while another job reads
    restore(store, MAIN, "k", tmp_path / "warm")
    assert all(resident(path) >= path.stat().st_size for path in blobs)
    assert snapshot(tmp_path / "cold") == snapshot(tmp_path / "warm") == snapshot(source)


def test_unchanged_save_uploads_nothing(store, tmp_path):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "k", source)
    blobs_before = sorted(b.digest for b in store.list_blobs())
    again = save(store, MAIN, "k", source)
    assert again.unchanged and again.uploaded_bytes == 0 and again.new_bytes == 0
    assert sorted(b.digest for b in store.list_blobs()) == blobs_before


def test_a_small_change_uploads_only_what_changed(store, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for index in range(200):
        (source / f"f{index:03}.o").write_bytes(os.urandom(50_000))
    first = save(store, MAIN, "ccache-1", source)
    for index in range(4):  # 2 % of the files
        (source / f"f{index:03}.o").write_bytes(os.urandom(50_000))
    second = save(store, MAIN, "ccache-2", source, prefixes=["ccache-"])
    assert second.saved and second.reused_bytes == 196 * 50_000
    assert second.uploaded_bytes < 0.05 * first.uploaded_bytes
    restore(store, MAIN, "ccache-2", tmp_path / "r")
    assert snapshot(tmp_path / "r") == snapshot(source)


def flip_a_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize("damage", [flip_a_byte, cut_in_half], ids=["flipped", "truncated"])
def test_a_corrupt_blob_is_a_miss_and_is_removed(store, tmp_path, damage):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "k", source)
    biggest = max(store.list_blobs(), key=lambda b: b.size)
    path = store._blob_path(biggest.digest)
    path.write_bytes(damage(path.read_bytes()))
    target = tmp_path / "r"
    target.mkdir()
    (target / "keep").write_text("mine")
    with pytest.raises(CorruptDataError, match="corrupt and was removed"):
        restore(store, MAIN, "k", target)
    assert not path.exists()
    assert [p.name for p in target.iterdir()] == ["keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "source", "store"]


def test_a_malformed_manifest_is_ignored_with_a_warning(store, tmp_path, caplog):
    store.put_entry("branch-main", "k", b"{not json")
    assert restore(store, MAIN, "k", tmp_path / "r").hit == "miss"
    assert "ignoring cache entry k" in caplog.text


def plant(store: LocalStore, tree: Tree, packs: list[bytes], scope="branch-main", key="evil"):
    """Write a hand-made entry, as an attacker with write access to a store could."""
    scoped = ScopedStore(store, [scope])
    blobs = [BlobRef(scoped.upload(blob)[0], len(blob)) for blob in packs]
    tree_blob = tree.to_bytes()
    tree_digest, _ = scoped.upload(tree_blob)
    metadata = {"tree": tree_digest, "paths": ["data"], "files": 1, "bytes": 0}
    scoped.commit(
        Manifest("directory", key, scope, (BlobRef(tree_digest, len(tree_blob)), *blobs), metadata)
    )


def hostile_tree(records: list[list], payload: bytes = b"owned\n") -> tuple[Tree, list[bytes]]:
    import hashlib

    import zstandard

    from ci_integration.archive.tree import Piece, Record

    pack = zstandard.ZstdCompressor().compress(payload)
    piece = Piece(hashlib.sha256(payload).hexdigest(), 0, 0, len(payload))
    digest = "sha256:" + hashlib.sha256(pack).hexdigest()
    tree = Tree(
        ["data"], [(digest, len(payload))], [piece], [Record.from_list(item) for item in records]
    )
    return tree, [pack]


ROOT = [0, "", "d", 0o755, 0, 0, []]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([ROOT, [0, "../outside.txt", "f", 0o644, 0, 6, [0]]], "unsafe path"),
        ([ROOT, [0, "/tmp/outside.txt", "f", 0o644, 0, 6, [0]]], "unsafe path"),
        ([ROOT, [0, "a/../../outside.txt", "f", 0o644, 0, 6, [0]]], "unsafe path"),
        (
            [
                ROOT,
                [0, "esc", "l", 0o777, 0, 0, "/tmp"],
                [0, "esc/outside.txt", "f", 0o644, 0, 6, [0]],
            ],
            "not inside a folder",
        ),
        ([ROOT, [0, "dev", "c", 0o644, 0, 0, []]], "special file"),
        # A hard link, as tar has them (to a file anywhere): the format has no such kind.
        ([ROOT, [0, "passwd", "h", 0o644, 0, 0, []]], "special file"),
        ([ROOT, [0, "x", "f", 0o644, 0, 6, [0]], [0, "x", "f", 0o644, 0, 6, [0]]], "twice"),
        ([ROOT, [0, "x", "f", 0o644, 0, 600, [0]]], "do not add up"),
        ([ROOT, [0, "x", "f", 0o644, 0, 6, [1]]], "names a piece that does not exist"),
        # Python would take -1 as the last piece: refused all the same.
        ([ROOT, [0, "x", "f", 0o644, 0, 6, [-1]]], "names a piece that does not exist"),
    ],
)
def test_hostile_archives_are_refused_and_write_nothing_outside(records, message, store, tmp_path):
    tree, packs = hostile_tree(records)
    plant(store, tree, packs)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    before = sorted(str(p) for p in tmp_path.rglob("*") if "store" not in p.parts)
    with pytest.raises(CorruptDataError, match=message):
        restore(store, MAIN, "evil", workspace / "data")
    after = sorted(str(p) for p in tmp_path.rglob("*") if "store" not in p.parts)
    assert after == before
    assert not Path("/tmp/outside.txt").exists()


def test_the_bulk_path_check_agrees_with_the_check_of_one_path():
    """A listing's paths are checked all at once; every path built from these parts,
    alone or beside safe ones, gets the same verdict as when checked by itself."""
    import itertools

    from ci_integration.archive.tree import _all_safe_relative_paths, is_safe_relative_path

    parts = ["a", ".", "..", "", "/", "\0", "b.", "..c"]
    verdicts = set()
    for count in range(1, 5):
        for path in map("".join, itertools.product(parts, repeat=count)):
            safe = is_safe_relative_path(path)
            verdicts.add(safe)
            for neighbour in ("", "x", "x/y"):
                assert _all_safe_relative_paths([neighbour, path]) is safe, path
                assert _all_safe_relative_paths([path, neighbour]) is safe, path
    assert verdicts == {True, False}


@pytest.mark.parametrize("piece_id", ["A" * 64, "a" * 63, "a" * 65, "../" + "a" * 61])
def test_a_listing_with_a_malformed_piece_id_is_refused(piece_id, store, tmp_path):
    from ci_integration.archive.tree import Piece

    tree, packs = hostile_tree([ROOT, [0, "x", "f", 0o644, 0, 6, [0]]])
    tree.pieces = [Piece(piece_id, 0, 0, 6)]
    plant(store, tree, packs)
    with pytest.raises(CorruptDataError, match="invalid piece"):
        restore(store, MAIN, "evil", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_a_pack_that_inflates_beyond_its_size_is_refused(store, tmp_path):
    import hashlib

    import zstandard

    from ci_integration.archive.tree import Piece, Record

    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * 50_000_000)
    tree = Tree(
        ["data"],
        [("sha256:" + hashlib.sha256(bomb).hexdigest(), 6)],
        [Piece(hashlib.sha256(b"owned\n").hexdigest(), 0, 0, 6)],
        [Record.from_list(ROOT), Record.from_list([0, "x", "f", 0o644, 0, 6, [0]])],
    )
    plant(store, tree, [bomb])
    with pytest.raises(CorruptDataError, match="holds 50000000 bytes, not 6"):
        restore(store, MAIN, "evil", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_setuid_bits_are_not_restored(store, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "tool").write_text("x")
    os.chmod(source / "tool", 0o4755)
    save(store, MAIN, "k", source)
    restore(store, MAIN, "k", tmp_path / "r")
    assert stat.S_IMODE(os.stat(tmp_path / "r" / "tool").st_mode) == 0o755


def test_links_are_kept_wherever_they_lead_and_special_files_are_not_saved(store, tmp_path, caplog):
    source = tmp_path / "source"
    source.mkdir()
    (source / "ok").write_text("ok")
    os.symlink("/etc/passwd", source / "abs")
    os.symlink("../../x", source / "rel")
    os.mkfifo(source / "fifo")
    save(store, MAIN, "k", source)
    restore(store, MAIN, "k", tmp_path / "r")
    restored = tmp_path / "r"
    assert sorted(p.name for p in restored.iterdir()) == ["abs", "ok", "rel"]
    assert (os.readlink(restored / "abs"), os.readlink(restored / "rel")) == (
        "/etc/passwd",
        "../../x",
    )
    assert "special file" in caplog.text


def test_nothing_is_written_through_a_link_that_leads_out(store, tmp_path):
    """A listing whose link leads out, and a file that would land through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    tree, packs = hostile_tree(
        [
            ROOT,
            [0, "esc", "l", 0o777, 0, 0, str(outside)],
            [0, "up", "l", 0o777, 0, 0, "../.."],
            [0, "x", "f", 0o644, 0, 6, [0]],
        ]
    )
    plant(store, tree, packs)
    target = tmp_path / "ws" / "data"
    restore(store, MAIN, "evil", target)
    assert os.readlink(target / "esc") == str(outside)
    assert os.readlink(target / "up") == "../.."
    assert (target / "x").read_bytes() == b"owned\n"
    assert list(outside.iterdir()) == []


def test_a_saved_virtualenv_runs_after_a_restore(store, tmp_path):
    venv = tmp_path / "project" / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    assert os.path.islink(venv / "bin" / "python")
    save(store, MAIN, "venv", venv)
    shutil.rmtree(venv)
    restore(store, MAIN, "venv", venv)
    ran = subprocess.run(
        [venv / "bin" / "python", "-c", "import sys; print(sys.prefix)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert ran.stdout.strip() == str(venv)


def test_a_restore_says_which_files_it_replaced(store, tmp_path, caplog):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "k", source)
    target = tmp_path / "data"
    target.mkdir()
    (target / "mine.txt").write_text("not in the cache")
    (target / "sub").mkdir()
    (target / "sub" / "notes").write_text("nor this")
    result = restore(store, MAIN, "k", target)
    assert result.removed_files == 2
    assert "2 files that were not in the cache are gone (mine.txt, sub/notes)" in caplog.text
    assert "--merge keeps them" in caplog.text
    assert snapshot(target) == snapshot(source)


def test_a_merge_extracts_over_what_is_there(store, tmp_path):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "k", source)
    target = tmp_path / "data"
    (target / "sub").mkdir(parents=True)
    (target / "mine.txt").write_text("stays")
    (target / "sub" / "notes").write_text("stays too")
    (target / "a.txt").write_text("replaced by the cache")
    (target / "empty").write_text("a file where the cache has a folder")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, target / "link")  # the cache has a link here: replaced, not entered
    result = dircache.restore(ScopedStore(store, MAIN), "k", [], ["data"], [target], merge=True)
    assert result.removed_files == 1  # the file "empty" where the cache has a folder
    assert (target / "mine.txt").read_text() == "stays"
    assert (target / "sub" / "notes").read_text() == "stays too"
    restored = snapshot(target)
    for path, expected in snapshot(source).items():
        if not (target / path).is_dir() or (target / path).is_symlink():
            assert restored[path] == expected, path
    assert os.readlink(target / "link") == "sub/deeper/run.sh"
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_merge_replaces_a_link_where_the_cache_has_a_folder(store, tmp_path):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "k", source)
    target = tmp_path / "data"
    target.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, target / "sub")
    dircache.restore(ScopedStore(store, MAIN), "k", [], ["data"], [target], merge=True)
    assert not (target / "sub").is_symlink()
    assert (target / "sub" / "b.bin").read_bytes() == (source / "sub" / "b.bin").read_bytes()
    assert list(elsewhere.iterdir()) == []


def test_a_symlinked_target_is_followed_and_stays_a_link(store, tmp_path):
    source = make_tree(tmp_path / "source")
    save(store, MAIN, "k", source)
    real = tmp_path / "disk" / "cache"
    real.mkdir(parents=True)
    target = tmp_path / "data"
    os.symlink(real, target)
    restore(store, MAIN, "k", target)
    assert os.readlink(target) == str(real)
    assert snapshot(real) == snapshot(source)


def test_folders_inside_one_another_are_refused(tmp_path):
    def expand(*written):
        return CachePaths.of(written, {}, tmp_path).expand()

    with pytest.raises(UsageError, match="a/b is inside a: name the outer folder alone"):
        expand("a", "a/b")
    with pytest.raises(UsageError, match=r"\./a is inside a"):
        expand("a", "./a")
    assert expand("a", "ab") == ["a", "ab"]


def test_patterns_match_as_actions_cache_takes_them(tmp_path):
    for folder in ["a/node_modules/x/node_modules", "b/node_modules", ".hidden/node_modules",
                   "c/keep", "c/skip"]:  # fmt: skip
        (tmp_path / folder).mkdir(parents=True)
    paths = CachePaths.of(["**/node_modules", "c/*", "!c/skip"], {}, tmp_path)
    # The inner node_modules goes with its outer one; hidden folders are matched.
    assert paths.expand() == [
        ".hidden/node_modules", "a/node_modules", "b/node_modules", "c/keep"]  # fmt: skip
    assert paths.locate(["b/node_modules", "c/keep"]) == [
        tmp_path / "b/node_modules", tmp_path / "c/keep"]  # fmt: skip
    for hostile in ["../node_modules", "/etc/node_modules", "b/../../node_modules", "d/x"]:
        with pytest.raises(CorruptDataError, match="which none of the paths matches"):
            paths.locate([hostile])
    home = CachePaths.of(["~/.cache/*"], {"HOME": str(tmp_path / "home")}, tmp_path)
    (tmp_path / "home/.cache/pip").mkdir(parents=True)
    assert home.expand() == ["~/.cache/pip"]
    assert home.locate(["~/.cache/pip"]) == [tmp_path / "home/.cache/pip"]
    with pytest.raises(UsageError, match="every path is an exclusion"):
        CachePaths.of(["!x"], {}, tmp_path)


def test_manifest_json_shape(store, tmp_path):
    save(store, MAIN, "k", make_tree(tmp_path / "source"))
    document = json.loads(store.get_entry("branch-main", "k"))
    assert document["kind"] == "directory" and document["scope"] == "branch-main"
    assert document["metadata"]["tree"] == document["blobs"][0]["digest"]
    stored = {b.digest: b.size for b in store.list_blobs()}
    assert {b["digest"]: b["size"] for b in document["blobs"]} == stored


@pytest.mark.skipif(sys.version_info < (3, 11), reason="compares with glob's include_hidden")
@pytest.mark.parametrize(
    "pattern",
    ["*", ".*", "**", "**/*", "**/node_modules", "**/.cache", "src/**", "src/**/*.o",
     "src/*/*.o", ".venv", ".venv/", "*/", "**/", "src/.hidden/*", "missing/*", "[.s]*",
     "src/a?.o", "**/deep/**/*.txt", "link/*"],
)  # fmt: skip
def test_patterns_match_hidden_names_as_glob_does_on_every_python(pattern, tmp_path):
    """Python 3.10's glob has no include_hidden: there the matches are found part by
    part, and they are the ones glob finds where it has it."""
    from ci_integration.cache_paths import walk_pattern

    for name in ("src/a1.o", "src/.hidden/b.o", "src/sub/c.o", "src/sub/deep/x/y.txt",
                 ".venv/bin/python", ".cache/pip/wheel", "web/node_modules/m.js",
                 "web/.cache/c", "top.txt", ".env"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    os.symlink("src", tmp_path / "link")
    expected = glob.glob(pattern, root_dir=tmp_path, recursive=True, include_hidden=True)
    found = walk_pattern(pattern, str(tmp_path))
    assert sorted(map(os.path.normpath, found)) == sorted(map(os.path.normpath, expected))
    assert expected or pattern == "missing/*"
