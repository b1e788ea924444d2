"""``python -m ci_integration`` as a real process, as a CI job starts it: its output
read line by line as it comes, so a test can act at a given moment of the run."""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path


class CLI:
    """``python -m ci_integration ARGS`` as a separate process, its output collected by
    threads and the process reaped as soon as it ends (a zombie would fool /proc)."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        python: str = sys.executable,
        **popen,
    ) -> None:
        self.proc = subprocess.Popen(
            [python, "-m", "ci_integration", *argv],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **popen,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
            threading.Thread(target=self.proc.wait, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream, into: list[str]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            into.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                if text in self.lines.get(timeout=0.1):
                    return
            if self.proc.poll() is not None and self.lines.empty():
                break
        raise AssertionError(f"no {text!r} from the CLI; stderr: {self.stderr}")

    def finish(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()
