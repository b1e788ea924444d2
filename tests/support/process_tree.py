"""Jenkins' process-tree killer, as hudson.util.ProcessTree does it on Linux, for tests.

A snapshot of /proc; every process whose /proc/PID/environ holds all the model
variables (unreadable ones never match) is killed with its descendants, children
first: SIGTERM, then a wait until /proc/PID/status is gone or the deadline of
SoftKillWaitSeconds (5 s) passes. Core Jenkins sends nothing after that; the
issue's "SIGKILL after 5 s" is left to whoever calls this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Mapping

SOFT_KILL_WAIT_SECONDS = 5.0


def environ(pid: int) -> dict[str, str]:
    """The environment of ``pid`` as Jenkins reads it; {} when it cannot be read."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as stream:
            raw = stream.read()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def pid_namespace(pid: int) -> str:
    """``pid:[N]``: a container's processes are in another namespace than the host's."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as stream:
            for line in stream:
                if line.lower().startswith("ppid:"):
                    return int(line.split(":")[1])
    except OSError:
        return None
    return None


def snapshot() -> dict[int, int | None]:
    """pid -> parent pid, for every process visible now."""
    return {int(name): parent(int(name)) for name in os.listdir("/proc") if name.isdigit()}


def matching(model: Mapping[str, str], pids: Iterable[int]) -> list[int]:
    """ProcessTree.OSProcess.hasMatchingEnvVars: every model variable, same value."""
    if not model:
        return []
    found = []
    for pid in pids:
        env = environ(pid)
        if all(env.get(name) == value for name, value in model.items()):
            found.append(pid)
    return found


def kill_all(model: Mapping[str, str], *, spare: Iterable[int] = ()) -> list[int]:
    """ProcessTree.Unix.killAll(model): returns the pids it sent SIGTERM to."""
    tree = snapshot()
    spared = set(spare)
    killed: list[int] = []
    for pid in matching(model, sorted(tree)):
        if pid not in spared:
            _kill_recursively(pid, tree, time.monotonic() + SOFT_KILL_WAIT_SECONDS, spared, killed)
    return killed


def _kill_recursively(
    pid: int, tree: dict[int, int | None], deadline: float, spared: set[int], killed: list[int]
) -> None:
    for child in [p for p, ppid in tree.items() if ppid == pid]:
        if child not in spared:
            _kill_recursively(child, tree, deadline, spared, killed)
    if pid in killed:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
        killed.append(pid)
    while os.path.exists(f"/proc/{pid}/status") and time.monotonic() < deadline:
        time.sleep(0.02)
