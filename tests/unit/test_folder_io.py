"""How a save reads a folder and a restore writes one, on real files: reading lets go
of every file it opened, however it ends; writing runs on a pool of threads and still
gives every file its bytes, mode and time, and nothing when a pack is bad."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from ci_integration import dircache
from ci_integration.archive import read_ahead, walk
from ci_integration.archive.pack import PACK_TARGET, PIECE_SIZE, Packer
from ci_integration.errors import CorruptDataError
from ci_integration.store.local import LocalStore
from ci_integration.store.scoped import ScopedStore
from tests.unit.test_dircache import snapshot

MAIN = ["branch-main"]


@pytest.fixture
def store(tmp_path) -> ScopedStore:
    return ScopedStore(LocalStore(tmp_path / "store"), MAIN)


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def save(store: ScopedStore, root: Path, key: str = "k") -> dircache.SaveResult:
    return dircache.save(store, key, ["data"], [root])


def restore(store: ScopedStore, root: Path, key: str = "k") -> dircache.RestoreResult:
    return dircache.restore(store, key, [], ["data"], [root])


def test_a_folder_read_beside_the_read_ahead_process_comes_back_whole(store, tmp_path):
    source = tmp_path / "source"
    for index in range(3 * read_ahead.START_AFTER[0]):
        folder = source / f"d{index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index}").write_bytes(os.urandom(index % 5000))
        os.utime(folder / f"f{index}", ns=(1_700_000_000_000_000_000 + index,) * 2)
    expected = snapshot(source)
    before = open_descriptors()
    assert save(store, source).files == 3 * read_ahead.START_AFTER[0]
    assert open_descriptors() == before
    restore(store, tmp_path / "restored")
    assert snapshot(tmp_path / "restored") == expected


def test_large_files_of_many_pieces_keep_their_bytes_modes_and_times(store, tmp_path):
    """Pieces of one file land in several packs, written by several threads, and the
    file gets its mode (read-only here) and time once its last piece is in."""
    source = tmp_path / "source"
    source.mkdir()
    sizes = {"big-readonly": PACK_TARGET + 3 * PIECE_SIZE + 17, "owner-only": 2 * PIECE_SIZE}
    for name, size in sizes.items():
        (source / name).write_bytes(os.urandom(size))
    # Two pieces with the same bytes, inside one file and across two.
    (source / "zeros").write_bytes(bytes(2 * PIECE_SIZE))
    (source / "more-zeros").write_bytes(bytes(PIECE_SIZE + 5))
    os.chmod(source / "big-readonly", 0o444)
    os.chmod(source / "owner-only", 0o400)
    for index, path in enumerate(sorted(source.iterdir())):
        os.utime(path, ns=(1_650_000_000_000_000_000 + index,) * 2)
    expected = snapshot(source)
    save(store, source)
    restore(store, tmp_path / "restored")
    assert snapshot(tmp_path / "restored") == expected
    assert stat.S_IMODE(os.stat(tmp_path / "restored" / "big-readonly").st_mode) == 0o444


def test_a_file_gone_between_listing_and_reading_is_left_out(store, tmp_path, caplog):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("a", "b", "c"):
        (source / name).write_text(name)
    listing = walk.Listing([source])
    files = list(listing.files())
    (source / "b").unlink()
    with caplog.at_level(logging.WARNING), Packer(store, {}) as packer:
        unreadable = walk.read_files(files, packer, lambda count: None)
        packer.finish()
    assert [file.record.path for file in files if id(file.record) in unreadable] == ["b"]
    assert f"not saved: {source / 'b'}" in caplog.text


def test_the_total_is_told_once_the_walk_has_found_every_file(store, tmp_path):
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "a").write_bytes(b"x" * 3000)
    (source / "sub" / "b").write_bytes(b"y" * 500)
    os.symlink("a", source / "link")
    told: list[int] = []
    read: list[int] = []
    with Packer(store, {}) as packer:
        records = walk.scan([source], packer, read.append, told.append)
        packer.finish()
    assert told == [3500] and sum(read) == 3500
    assert [(record.path, record.type) for record in records] == [
        ("", "d"),
        ("a", "f"),
        ("link", "l"),
        ("sub", "d"),
        ("sub/b", "f"),
    ]


@pytest.mark.parametrize("stop_after", [10, 2 * read_ahead.START_AFTER[0]])
def test_a_save_stopped_midway_lets_go_of_every_file_and_process_it_started(
    store, tmp_path, stop_after
):
    """Before the read-ahead process starts, and after: its pipe is closed and it is
    reaped."""
    source = tmp_path / "source"
    source.mkdir()
    for index in range(4 * read_ahead.START_AFTER[0]):
        (source / f"f{index:03}").write_bytes(os.urandom(1000))
    read = []

    def stop_midway(count: int) -> None:
        read.append(count)
        if len(read) == stop_after:
            raise KeyboardInterrupt

    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    before = open_descriptors(), children.read_text().split()
    with pytest.raises(KeyboardInterrupt), Packer(store, {}) as packer:
        walk.scan([source], packer, stop_midway)
    assert (open_descriptors(), children.read_text().split()) == before


def test_a_bad_pack_among_many_leaves_the_target_as_it_was(store, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for index in range(4):
        (source / f"part{index}").write_bytes(os.urandom(PACK_TARGET - 1000))
    save(store, source)
    manifest = store.read_entry("branch-main", "k", dircache.KIND)
    packs = [blob for blob in manifest.blobs if blob.digest != manifest.metadata["tree"]]
    assert len(packs) >= 4
    victim = store.store._blob_path(packs[2].digest)
    victim.write_bytes(victim.read_bytes()[:-10])
    target = tmp_path / "work" / "data"
    target.mkdir(parents=True)
    (target / "mine").write_text("kept")
    with pytest.raises(CorruptDataError):
        restore(store, target)
    assert [path.name for path in target.parent.iterdir()] == ["data"]
    assert [path.name for path in target.iterdir()] == ["mine"]
