"""Who owns a container: the process that ran it, named so that another process
can tell later, without doubt, whether that owner still runs.

A pid alone is not enough: pids are reused, and a pid means something only in its
own pid namespace (a CI agent in a container may share the host's name). So the
owner is (host name, pid namespace, pid, the process's start time since boot).
"""

from __future__ import annotations

import dataclasses
import os
import socket

PROC = "/proc"


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    pid_namespace: str

    @classmethod
    def here(cls) -> Host:
        return cls(socket.gethostname(), pid_namespace())


@dataclasses.dataclass(frozen=True)
class Owner:
    host: Host
    pid: int
    start_ticks: int | None

    @classmethod
    def this_process(cls) -> Owner:
        pid = os.getpid()
        return cls(Host.here(), pid, start_ticks(pid))


def pid_namespace(pid: int | str = "self") -> str:
    """``pid:[4026531836]``; empty when /proc does not say."""
    try:
        return os.readlink(f"{PROC}/{pid}/ns/pid")
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat),
    or None when there is no such process, or only its zombie."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as stream:
            stat = stream.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def is_running(owner: Owner, here: Host) -> bool | None:
    """True when the owner still runs, False when it is gone, None when this host
    cannot tell (another host, another pid namespace, or no owner recorded)."""
    if not owner.host.name or owner.host != here or owner.pid <= 0:
        return None
    ticks = start_ticks(owner.pid)
    if ticks is None:
        return False
    # The pid was reused by another process when its start time differs.
    return owner.start_ticks is None or ticks == owner.start_ticks
