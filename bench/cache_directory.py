"""Directory cache: ``cache save`` / ``cache restore`` against ``tar | zstd -T0 -3`` and
``zstd -d | tar -x`` on the same folder, and the upload after a 2 % change.

Two folders: ``mixed`` (about 1 GiB: many small files, fewer medium, a few large,
half text and half noise) and ``ccache`` (files of 1 to 64 KB, as a ccache folder
holds). Ours and the baseline run in turns (ours, baseline, ours, ...), ``RUNS`` times
each; the page cache is dropped before every run where the bench may (root), so each
run reads from disk. Each figure is the median, with the spread (lowest to highest)
beside it; peak memory is the largest resident set of any of our runs.

Every restore, ours and the baseline's, writes into a folder of its own, and none is
deleted before the bench ends (see ``Targets``): a CI job restores into a workspace
where nothing was just deleted, and on a file system without a journal, restoring
right after deleting the last restore's files measures the kernel, not the tools.

    python -m bench cache
    BENCH_CACHE_MB=256 BENCH_CCACHE_MB=300 BENCH_RUNS=3 python -m bench cache   (quicker)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.table import Row

SECTION = "cache"
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
GNU_TIME = shutil.which("time", path="/usr/bin:/bin")  # Debian's package "time"
# Free disk a restore leaves, at least, beyond twice what it writes.
DISK_RESERVE = 4 * 1024**3


def make_corpus(rng: random.Random) -> bytes:
    """Text-like bytes (compressible about 3:1), like sources and build logs."""
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 10)))
             for _ in range(5000)]  # fmt: skip
    return b" ".join(rng.choice(words) for _ in range(800_000))[: 4 * 1024 * 1024]


def make_content(rng: random.Random, corpus: bytes, size: int) -> bytes:
    """Half text, half noise: between source files and object files."""
    text = size // 2
    start = rng.randrange(0, len(corpus) - text) if text < len(corpus) else 0
    return corpus[start : start + text] + rng.randbytes(size - text)


# Each shape: (share of the bytes, smallest file, largest file).
SHAPES = {
    "mixed": [(0.2, 1_000, 16_000), (0.5, 64_000, 512_000), (0.3, 8_000_000, 40_000_000)],
    "ccache": [(1.0, 1_000, 64_000)],
}


def make_folder(root: Path, total_mb: int, shape: str = "mixed", seed: int = 1) -> list[Path]:
    """Files of ``shape`` adding up to about total_mb MiB."""
    rng = random.Random(seed)
    corpus = make_corpus(rng)
    budget = total_mb * 1024 * 1024
    files = []
    for share, low, high in SHAPES[shape]:
        left = int(budget * share)
        while left > 0:
            size = min(rng.randint(low, high), left)
            path = root / f"d{len(files) % 97:02}" / f"f{len(files):06}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(make_content(rng, corpus, size))
            files.append(path)
            left -= size
    return files


class Timer:
    """Runs commands cold (page cache dropped first, where it may) and keeps, for each
    command, its wall time and the peak resident memory of its process tree."""

    def __init__(self) -> None:
        self.cold = self._can_drop_caches()
        self.peak_rss: dict[str, int] = {}

    @staticmethod
    def _can_drop_caches() -> bool:
        try:
            DROP_CACHES.write_text("3\n")
        except OSError:
            return False
        return True

    def run(self, label: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None
            ) -> tuple[float, str]:  # fmt: skip
        # Dirty pages of the run before would otherwise be flushed on this run's time.
        os.sync()
        if self.cold:
            DROP_CACHES.write_text("3\n")
        with tempfile.TemporaryDirectory(prefix="bench-run-") as scratch:
            measured = Path(scratch) / "rss"
            # GNU time's %M: the largest resident set of the command, its own children
            # included (a pipeline's biggest member), in KiB. Not this process's wait4:
            # a child forked from here starts out with this process's high-water mark.
            wrapper = [GNU_TIME, "-f", "%M", "-o", str(measured)] if GNU_TIME else []
            started = time.perf_counter()
            done = subprocess.run([*wrapper, *argv], cwd=cwd, env=env, capture_output=True,
                                  text=True, check=False)  # fmt: skip
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"bench: {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
            if GNU_TIME:
                peak = int(measured.read_text().split()[-1])
                self.peak_rss[label] = max(self.peak_rss.get(label, 0), peak)
        return seconds, done.stdout


def interleaved(runs: int, ours: Callable[[], float], baseline: Callable[[], float]
                ) -> tuple[list[float], list[float]]:  # fmt: skip
    """``runs`` timings each, taken in turns so that neither gets the quieter moments."""
    mine, theirs = [], []
    for _ in range(runs):
        mine.append(ours())
        theirs.append(baseline())
    return mine, theirs


def spread(rates: list[float]) -> str:
    return f"{min(rates):.0f}-{max(rates):.0f}"


class Targets:
    """A new folder for every restore to write into; none deleted until the bench ends.

    On ext4 without a journal (these machines' disks), the kernel hands out no inode
    freed in the last seconds to minutes, and finds the next free one by looking at
    each such inode in turn: a restore right after deleting the previous restore's
    files spends most of its time in that search (perf: ``recently_deleted``,
    ``find_inode_bit``), whichever tool restores, and the figures say little about
    the tools. Only when the disk runs short are the older folders deleted first, and
    the bench says so."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: list[Path] = []
        self.deleted_early = False

    def fresh(self, size: int) -> Path:
        if shutil.disk_usage(self.root).free < 2 * size + DISK_RESERVE:
            for old in self.made:
                shutil.rmtree(old, ignore_errors=True)
            self.made.clear()
            self.deleted_early = True
        self.made.append(Path(tempfile.mkdtemp(prefix="restore-", dir=self.root)))
        return self.made[-1]


def measure(shape: str, total_mb: int, runs: int, timer: Timer, scratch: Path) -> list[Row]:
    cli = [sys.executable, "-m", "ci_integration"]
    base = scratch / shape
    targets = Targets(base)
    source = base / "job1"
    files = make_folder(source / "data", total_mb, shape)
    size = sum(path.stat().st_size for path in files)
    archive = base / "data.tar.zst"
    env = {**os.environ, "CI_INTEGRATION_PROVIDER": "local", "CI_INTEGRATION_BRANCH": "main"}
    store = base / "store"

    def tar_save() -> float:
        archive.unlink(missing_ok=True)
        command = f"tar -cf - data | zstd -T0 -3 -q -o {archive}"
        return timer.run("tar save", ["sh", "-c", command], source)[0]

    def tar_restore() -> float:
        command = f"zstd -d -q -c {archive} | tar -xf -"
        return timer.run("tar restore", ["sh", "-c", command], targets.fresh(size))[0]

    def our_save() -> float:
        shutil.rmtree(store, ignore_errors=True)
        argv = [*cli, "cache", "save", "data", "--key", "bench-1", "--store", str(store)]
        return timer.run("save", argv, source, env)[0]

    def our_restore() -> float:
        argv = [*cli, "cache", "restore", "data", "--key", "bench-1", "--store", str(store)]
        return timer.run("restore", argv, targets.fresh(size), env)[0]

    mib = size / 1024 / 1024
    save_ours, save_tar = interleaved(runs, our_save, tar_save)
    restore_ours, restore_tar = interleaved(runs, our_restore, tar_restore)
    if targets.deleted_early:
        print(f"bench: {shape}: the disk ran short, so some restores ran right after earlier"
              " ones were deleted: their figures are the kernel's as much as the tools'",
              file=sys.stderr)  # fmt: skip
    first_upload = sum(p.stat().st_size for p in (store / "blobs").rglob("*") if p.is_file())
    tar_bytes = archive.stat().st_size
    rows = []
    for what, ours, theirs in (("save", save_ours, save_tar),
                               ("restore", restore_ours, restore_tar)):  # fmt: skip
        our_rates = [mib / seconds for seconds in ours]
        tar_rates = [mib / seconds for seconds in theirs]
        rows.append(Row(
            SECTION,
            f"{shape}: {what} {mib:.0f} MiB, {len(files)} files (MiB/s, median of {runs};"
            f" spread ours {spread(our_rates)}, baseline {spread(tar_rates)})",
            statistics.median(our_rates), statistics.median(tar_rates), target=">= 1.2",
        ))  # fmt: skip
    for what in ("save", "restore"):
        rows.append(Row(SECTION, f"{shape}: peak memory of a {what} (MiB; tar and zstd's:"
                        f" {timer.peak_rss.get('tar ' + what, 0) / 1024:.0f})",
                        timer.peak_rss.get(what, 0) / 1024, target="<= 512"))  # fmt: skip
    rows.append(Row(SECTION, f"{shape}: bytes stored by a full save vs the .tar.zst",
                    first_upload, tar_bytes))  # fmt: skip
    if shape == "mixed":
        rows.append(upload_after_a_change(files, source, store, cli, env, timer, first_upload))
    return rows


def upload_after_a_change(files: list[Path], source: Path, store: Path, cli: list[str],
                          env: dict[str, str], timer: Timer, first_upload: int) -> Row:  # fmt: skip
    size = sum(path.stat().st_size for path in files)
    rng = random.Random(2)
    changed = rng.sample(files, max(1, len(files) // 50))
    for path in changed:
        path.write_bytes(rng.randbytes(path.stat().st_size))
    argv = [*cli, "cache", "save", "data", "--key", "bench-2", "--restore-key", "bench-",
            "--store", str(store), "--json"]  # fmt: skip
    second = json.loads(timer.run("save again", argv, source, env)[1])
    changed_bytes = sum(path.stat().st_size for path in changed)
    return Row(SECTION, f"mixed: upload after {len(changed)} files changed "
               f"({changed_bytes / size:.1%} of bytes) vs full save (bytes)",
               second["uploaded_bytes"], first_upload, target="<= 0.05")  # fmt: skip


def run() -> list[Row]:
    for tool in ("tar", "zstd"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} is needed for the baseline (apt-get install {tool})")
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    timer = Timer()
    if not timer.cold:
        print("bench: cannot drop the page cache (not root): the runs read warm files",
              file=sys.stderr)  # fmt: skip
    scratch_root = os.environ.get("BENCH_TMP")
    with tempfile.TemporaryDirectory(prefix="bench-cache-", dir=scratch_root) as scratch:
        shapes = [("mixed", int(os.environ.get("BENCH_CACHE_MB", "1024")), timer)]
        ccache_mb = int(os.environ.get("BENCH_CCACHE_MB", "3072"))
        if ccache_mb:
            shapes.append(("ccache", ccache_mb, Timer()))
        rows = []
        for shape, total_mb, shape_timer in shapes:
            rows += measure(shape, total_mb, runs, shape_timer, Path(scratch))
    return rows
