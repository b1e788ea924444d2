"""The read-ahead process of a save, on real files and the real page cache: it asks
the disk for the files the reader reads next, no further ahead than its window, and
it never outlives the save, however the save ends."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from ci_integration import dircache, process
from ci_integration.archive import read_ahead
from ci_integration.archive.walk import Listing
from ci_integration.store.local import LocalStore
from ci_integration.store.scoped import ScopedStore
from tests.support.page_cache import need_evictable, need_fincore, resident_each
from tests.unit.test_dircache import snapshot

MIB = 1024 * 1024


class Cached:
    """Which of ``files`` have been seen wholly in the page cache, ever. Counted once
    seen, since the kernel may take back what was asked for and never read: these
    VMs run a DAMON ``pageout`` scheme on pages a minute without access, and a busy
    machine reclaims sooner."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.sizes = [path.stat().st_size for path in files]
        self.seen: set[int] = set()

    def look(self) -> None:
        unseen = [index for index in range(len(self.files)) if index not in self.seen]
        resident = resident_each([self.files[index] for index in unseen])
        for index, size in zip(unseen, resident, strict=True):
            if size >= self.sizes[index]:
                self.seen.add(index)

    def reaches(self, at_least: int, timeout: float = 180.0) -> None:
        """Waits until the first ``at_least`` files have been cached. A healthy run
        waits a fraction of a second; a disk busy with an ``rm -rf`` of 49 GB kept
        20 MiB asked for uncached for over 30 s."""
        deadline = time.monotonic() + timeout
        while not self.seen.issuperset(range(at_least)):
            assert time.monotonic() < deadline, f"fewer than {at_least} files were asked for"
            time.sleep(0.1)
            self.look()

    def stays_within(self, at_most: int) -> None:
        time.sleep(1.0)  # time enough to overshoot, were it going to
        self.look()
        assert max(self.seen) < at_most, f"file {max(self.seen)} was asked for too soon"


@pytest.fixture
def folder(tmp_path) -> list[Path]:
    """40 files of 1 MiB, in two folders, none of them in the page cache."""
    need_fincore()
    files = []
    for index in range(40):
        path = tmp_path / "data" / f"d{index // 20}" / f"f{index:02}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(MIB))
        files.append(path)
    need_evictable(files)
    return files


def test_it_asks_for_the_files_the_reader_reads_next_and_stays_within_its_window(folder):
    root = folder[0].parents[1]
    listed = [Path(file.path) for file in Listing([root]).files()]
    assert listed == folder  # the order the reader reads in
    with read_ahead.ReadAhead([root], window=8 * MIB, start_after=(0, 0)) as ahead:
        ahead.advance(0)
        assert ahead.started
        cached = Cached(folder)
        # Asked while no more than the window's bytes were ahead: 9 files of 1 MiB.
        cached.reaches(9)
        cached.stays_within(9)
        ahead.advance(20 * MIB)  # the reader has read 20 of them: 29 now
        cached.reaches(29)
        cached.stays_within(29)


def test_the_process_is_gone_when_the_block_ends_even_by_an_error(folder):
    root = folder[0].parents[1]
    before = _children()
    with (
        pytest.raises(KeyboardInterrupt),
        read_ahead.ReadAhead([root], window=MIB, start_after=(0, 0)) as ahead,
    ):
        ahead.advance(0)
        (started,) = _children() - before
        raise KeyboardInterrupt
    assert not process.pid_alive(started)  # killed and reaped, not a zombie


def test_it_starts_only_once_the_reader_is_some_way_in(tmp_path):
    before = _children()
    with read_ahead.ReadAhead([tmp_path], start_after=(3, 10 * MIB)) as ahead:
        ahead.advance(100)
        ahead.advance(100)
        assert not ahead.started and _children() == before
        ahead.advance(100)
        assert ahead.started and len(_children() - before) == 1
    with read_ahead.ReadAhead([tmp_path], start_after=(1000, 10 * MIB)) as ahead:
        ahead.advance(10 * MIB)
        assert ahead.started


def test_a_save_reads_the_same_bytes_when_the_process_cannot_start(tmp_path, monkeypatch):
    source = tmp_path / "source"
    for index in range(3 * read_ahead.START_AFTER[0]):
        (source / f"d{index % 3}").mkdir(parents=True, exist_ok=True)
        (source / f"d{index % 3}" / f"f{index}").write_bytes(os.urandom(index * 37))
    expected = snapshot(source)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    store = ScopedStore(LocalStore(tmp_path / "store"), ["branch-main"])
    assert dircache.save(store, "k", ["data"], [source]).files == 3 * read_ahead.START_AFTER[0]
    dircache.restore(store, "k", [], ["data"], [tmp_path / "restored"])
    assert snapshot(tmp_path / "restored") == expected


def test_a_companion_that_is_gone_or_does_not_read_never_holds_the_caller_up():
    with process.companion([sys.executable, "-c", "pass"]) as send:
        assert send is not None
        deadline = time.monotonic() + 10
        while send(b"12345678") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not send(b"12345678")  # it exited: the pipe is broken
    started = time.monotonic()
    with process.companion([sys.executable, "-c", "import time; time.sleep(60)"]) as send:
        assert send is not None
        for _ in range(20_000):  # 160 kB: more than a pipe holds, never waited on
            assert send(b"12345678")
    assert time.monotonic() - started < 10
    with process.companion(["/nonexistent/helper"]) as send:
        assert send is None


def _children() -> set[int]:
    """Our child processes, alive or not yet reaped (a test process may have others:
    the Docker engines of the integration tests run beside it)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids
