"""A plain git checkout, outside any CI: branch, commit, tag and default branch from git."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from ci_integration import process
from ci_integration.context.model import CIContext, Provider
from ci_integration.errors import CommandError

log = logging.getLogger(__name__)


def detect(env: Mapping[str, str], cwd: Path, *, say_why: bool = True) -> CIContext:
    """Outside a repository the branch is unknown, which only the debug log says: a
    command that keys nothing by branch (``run``) has no use for it, and one that does
    reports the scope (``detached``). A checkout without git to read it is a warning,
    unless ``say_why=False``: where git only fills gaps a CI left, it is no news."""
    git = _Git(env, cwd, log.warning if say_why else log.debug)
    if not git.is_repository():
        return CIContext(provider=Provider.LOCAL)
    branch = git.output("symbolic-ref", "--quiet", "--short", "HEAD")
    commit = git.output("rev-parse", "--verify", "--quiet", "HEAD")
    tag = None
    if branch is None and commit is not None:
        tag = git.output("describe", "--tags", "--exact-match", "HEAD")
    return CIContext(
        provider=Provider.LOCAL,
        branch=branch,
        default_branch=_default_branch(git),
        tag=tag,
        commit=commit,
        repository=git.output("remote", "get-url", "origin"),
    )


def _default_branch(git: _Git) -> str | None:
    """The remote's HEAD (set by clone and by ``git remote set-head``), when known."""
    remote_head = git.output("symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
    if remote_head and remote_head.startswith("origin/"):
        return remote_head[len("origin/") :]
    return None


class _Git:
    def __init__(self, env: Mapping[str, str], cwd: Path, report: Callable[..., None]) -> None:
        self.env = env
        self.cwd = cwd
        self.report = report

    def is_repository(self) -> bool:
        # No .git here or above, and no GIT_DIR: git would say no; not asked (a
        # process, a tenth of a second on a cold machine, on every command).
        if not self.env.get("GIT_DIR") and not _under_a_git_folder(self.cwd):
            log.debug("%s is not in a git repository: branch and commit unknown", self.cwd)
            return False
        try:
            result = process.run(
                ["git", "rev-parse", "--is-inside-work-tree"],
                env=self.env,
                cwd=self.cwd,
                check=False,
            )
        except CommandError as exc:
            self.report("git is not available (%s): branch and commit unknown", exc)
            return False
        if result.returncode != 0:
            log.debug("%s is not in a git repository: branch and commit unknown", self.cwd)
            return False
        return True

    def output(self, *args: str) -> str | None:
        result = process.run(["git", *args], env=self.env, cwd=self.cwd, check=False)
        value = result.stdout.strip()
        return value if result.returncode == 0 and value else None


def _under_a_git_folder(cwd: Path) -> bool:
    """Whether ``cwd`` or a folder above it holds ``.git`` (a folder, or the file of a
    worktree or submodule)."""
    return any((folder / ".git").exists() for folder in (cwd, *cwd.parents))
