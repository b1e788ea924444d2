"""A server program started for tests (a registry, azurite): on a free port of
127.0.0.1, its address read from its log, stopped by its pid at the end."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

STOP_SECONDS = 10


@contextlib.contextmanager
def running(
    command: list[str],
    log_path: Path,
    ready: str,
    *,
    what: str,
    cwd: Path | None = None,
    start_seconds: float = 20,
) -> Iterator[re.Match[str]]:
    """Runs ``command`` until the block is left; yields the match of the ``ready``
    regex in its log (which says the port it took)."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + start_seconds
        while not (found := re.search(ready, log_path.read_text(errors="replace"))):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{what} did not start: {tail}")
            time.sleep(0.05)
        yield found
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_SECONDS)
