"""Saves and restores killed with SIGKILL at random moments, on every backend: no
entry is ever corrupt, no target is ever half-written, and the next run (or a
prune) leaves no temp file behind."""

from __future__ import annotations

import concurrent.futures
import hashlib
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

RUNS = 100
PARALLEL = 4


def folder_digest(root: Path) -> str | None:
    if not root.exists():
        return None
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def write_data(folder: Path, rng: random.Random) -> None:
    folder.mkdir(parents=True)
    for index in range(40):
        (folder / f"f{index}").write_bytes(rng.randbytes(rng.randint(1, 120_000)))


def seconds_of(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.monotonic() - started


class KillMoments:
    """Random moments to kill a run at, spanning a whole run as long as runs take now.

    It starts from ``alone``, how long a whole run took by itself; PARALLEL runs on this
    machine's 2 cores take about twice that. That timing may have been taken under a
    load that has gone since (another test, another worker), and then most runs would
    end before their moment: so once runs have ended on their own, the moments follow
    twice the median of the last of them. (A run ends on its own only when it is
    shorter than its moment, so that median settles where half the runs are killed.)"""

    RECENT = 8

    def __init__(self, alone: float) -> None:
        self.bound = max(0.8, 2 * alone)
        self.finished: list[float] = []
        self.lock = threading.Lock()

    def pick(self, rng: random.Random) -> float:
        with self.lock:
            return rng.uniform(0.05, self.bound)

    def ended_alone(self, seconds: float) -> None:
        with self.lock:
            self.finished = [*self.finished[-(self.RECENT - 1) :], seconds]
            if len(self.finished) >= 4:
                self.bound = max(0.8, 2 * statistics.median(self.finished))


def killed_run(argv: list[str], cwd: Path, env: dict[str, str], rng: random.Random,
               moments: KillMoments) -> int:  # fmt: skip
    """Runs ``argv`` and kills it at a random moment (some runs end first)."""
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        code = process.wait(timeout=moments.pick(rng))
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        return process.wait(timeout=30)
    moments.ended_alone(time.monotonic() - started)
    return code


def test_killed_saves_and_restores(backend, tmp_path, base_env):
    env = {**base_env, **backend.env, "CI_INTEGRATION_PROVIDER": "local",
           "CI_INTEGRATION_BRANCH": "main"}  # fmt: skip
    cli = [sys.executable, "-m", "ci_integration", "cache"]
    source = tmp_path / "source"
    write_data(source / "data", random.Random(7))
    expected = folder_digest(source / "data")
    save = [*cli, "save", "data", "--key", "k", "--store", backend.url]
    restore = [*cli, "restore", "data", "--key", "k", "--store", backend.url, "--strict"]
    # A whole save and restore on this backend, timed on other bytes of the same sizes
    # (so that nothing the killed saves write is stored yet).
    timing = tmp_path / "timing"
    write_data(timing / "data", random.Random(8))
    timed = ["--key", "timing", "--store", backend.url]
    save_moments = KillMoments(seconds_of([*cli, "save", "data", *timed], timing, env))
    shutil.rmtree(timing / "data")
    restore_moments = KillMoments(
        seconds_of([*cli, "restore", "data", *timed, "--strict"], timing, env)
    )

    def one_save(n: int) -> int:
        return killed_run(save, source, env, random.Random(n), save_moments)

    def one_restore(n: int) -> tuple[str | None, Path]:
        # One workspace a pool thread, so runs there follow one another and each meets
        # what the killed ones before it left (run n and n + PARALLEL may overlap).
        workspace = tmp_path / f"restore-{threading.current_thread().name}"
        workspace.mkdir(exist_ok=True)
        killed_run(restore, workspace, env, random.Random(1000 + n), restore_moments)
        return folder_digest(workspace / "data"), workspace

    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        codes = list(pool.map(one_save, range(RUNS)))
    # Enough were killed mid-way (a fast backend's save may end before its moment).
    assert codes.count(-signal.SIGKILL) >= RUNS // 4, codes
    store = backend.open()
    check = tmp_path / "check"
    check.mkdir()
    for entry in [e for e in store.list_entries() if e.key == "k"]:  # visible means whole
        subprocess.run(restore, cwd=check, env=env, check=True, capture_output=True)
        assert folder_digest(check / "data") == expected, entry.key
    if not backend.can_list:  # what a restore finds, if anything, is whole
        subprocess.run(restore, cwd=check, env=env, check=True, capture_output=True)
        assert folder_digest(check / "data") in (None, expected)
    subprocess.run(save, cwd=source, env=env, check=True, capture_output=True)

    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(one_restore, range(RUNS)))
    # Killed at any moment, a target is either not there yet or complete.
    assert {digest for digest, _ in outcomes} <= {None, expected}
    for workspace in {workspace for _, workspace in outcomes}:
        subprocess.run(restore, cwd=workspace, env=env, check=True, capture_output=True)
        assert folder_digest(workspace / "data") == expected
        assert [p.name for p in workspace.iterdir()] == ["data"]  # leftovers swept

    subprocess.run([*cli, "prune", "--store", backend.url], cwd=tmp_path, env=env, check=True,
                   capture_output=True)  # fmt: skip
    temp = getattr(store, "tmp", None)
    if temp is not None:
        assert list(temp.iterdir()) == []
