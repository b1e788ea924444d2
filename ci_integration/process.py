"""The one place that runs subprocesses."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from ci_integration.errors import CommandError

log = logging.getLogger(__name__)

# Writes to a companion's stdin: False once it is gone.
Sender = Callable[[bytes], bool]


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    check: bool = True,
    capture: bool = True,
    input: bytes | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and return the finished process, text mode.

    With ``check``, a non-zero exit raises CommandError carrying the command, its
    exit code and its output. A missing program raises CommandError with code 127,
    as a shell would report it.
    """
    argv = [str(arg) for arg in argv]
    log.debug("running %s", argv)
    try:
        result = subprocess.run(
            argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            input=input.decode() if input is not None else None,
            capture_output=capture,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, 124, f"timed out after {timeout} s") from exc
    if check and result.returncode != 0:
        output = (result.stderr or "") + (result.stdout or "") if capture else ""
        raise CommandError(argv, result.returncode, output)
    return result


def stream(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> int:
    """Run ``argv`` with stdout and stderr merged, handing each line to ``on_line``
    as it comes; returns the exit code. A missing program raises CommandError."""
    argv = [str(arg) for arg in argv]
    log.debug("running %s", argv)
    try:
        child = subprocess.Popen(
            argv,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from exc
    try:
        assert child.stdout is not None
        for line in child.stdout:
            on_line(line.rstrip("\n"))
        return child.wait()
    finally:
        if child.poll() is None:
            # Interrupted while the command runs: it must not outlive us.
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


@contextlib.contextmanager
def companion(argv: Sequence[str]) -> Iterator[Sender | None]:
    """Run ``argv`` beside this process for the length of the block, its stdin a pipe
    and its output discarded: a helper whose work only speeds ours up.

    Gives a function writing to that pipe, which never waits (what does not fit is
    dropped, so write what a later write makes whole) and says False once the
    helper is gone; None if it could not start. Leaving the block kills and reaps
    the helper, whatever ends the block: it never outlives it.
    """
    argv = [str(arg) for arg in argv]
    log.debug("running %s beside us", argv[:3])
    try:
        child = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    except OSError as exc:
        log.debug("could not start %s: %s", argv[0], exc)
        yield None
        return
    assert child.stdin is not None
    pipe = child.stdin.fileno()
    os.set_blocking(pipe, False)

    def send(data: bytes) -> bool:
        try:
            os.write(pipe, data)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return True

    try:
        yield send
    finally:
        child.kill()
        child.stdin.close()
        child.wait()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (ours to signal or not)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True
