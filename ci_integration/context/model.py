"""The CI context: where a job runs, for which branch or pull request, and its cache scopes."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from typing import Any

SCOPE_MAX_LENGTH = 100
_UNSAFE_SCOPE_CHARS = re.compile(r"[^A-Za-z0-9._-]+|\.{2,}")


class Provider(str, enum.Enum):
    GITHUB_ACTIONS = "github-actions"
    JENKINS = "jenkins"
    LOCAL = "local"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class CIContext:
    provider: Provider
    branch: str | None = None
    base_branch: str | None = None
    default_branch: str | None = None
    is_pull_request: bool = False
    pr_number: int | None = None
    is_fork: bool = False
    tag: str | None = None
    commit: str | None = None
    build_id: str | None = None
    build_url: str | None = None
    job_name: str | None = None
    run_attempt: int | None = None
    event: str | None = None
    repository: str | None = None
    scope_override: str | None = None
    read_only_override: bool = False

    @property
    def scope(self) -> str:
        """The cache scope this job writes to: its pull request, tag or branch."""
        if self.scope_override:
            return sanitize_scope(self.scope_override)
        if self.is_pull_request and self.pr_number is not None:
            return f"pr-{self.pr_number}"
        if self.is_pull_request and self.branch:
            # A change request with no number still must not share its branch's scope.
            return scope_for("pr", self.branch)
        if self.tag:
            return scope_for("tag", self.tag)
        if self.branch:
            return scope_for("branch", self.branch)
        if self.commit:
            return f"commit-{self.commit[:12]}"
        return "detached"

    @property
    def scope_chain(self) -> list[str]:
        """Scopes a restore looks in, in order: own, the PR's target, the default branch."""
        chain = [self.scope]
        for branch in (self.base_branch, self.default_branch):
            if branch:
                candidate = scope_for("branch", branch)
                if candidate not in chain:
                    chain.append(candidate)
        return chain

    @property
    def read_only(self) -> bool:
        """A pull request from a fork restores but never saves: its code is untrusted.
        So does a job told so (CI_INTEGRATION_READ_ONLY=true)."""
        return self.is_fork or self.read_only_override

    @property
    def read_only_reason(self) -> str:
        """Why the job is read-only, for its log lines; "" when it is not."""
        if self.is_fork:
            return "a pull request from a fork"
        return "CI_INTEGRATION_READ_ONLY is set" if self.read_only_override else ""

    def as_dict(self) -> dict[str, Any]:
        data = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in OVERRIDE_ONLY
        }
        data["provider"] = self.provider.value
        data["scope"] = self.scope
        data["scope_chain"] = self.scope_chain
        data["read_only"] = self.read_only
        return data


def scope_for(kind: str, name: str) -> str:
    return sanitize_scope(f"{kind}-{name}")


def sanitize_scope(name: str) -> str:
    """A scope usable as a path segment, an S3 prefix and part of an image tag.

    Names that had to be changed get a short hash of the original, so that
    ``feature/x`` and ``feature-x`` never share a scope, and no branch can be
    spelled into the default branch's scope.
    """
    safe = _UNSAFE_SCOPE_CHARS.sub("-", name).strip(".-") or "unnamed"
    if safe == name and len(name) <= SCOPE_MAX_LENGTH:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{safe[: SCOPE_MAX_LENGTH - 9]}-{digest}"


def parse_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
# Fields that only an override sets, reported through the properties they change.
OVERRIDE_ONLY = frozenset({"scope_override", "read_only_override"})


def parse_bool(value: str | None) -> bool:
    """A CI's own flag: anything but a yes is a no."""
    return (value or "").strip().lower() in TRUE_WORDS


def parse_switch(value: str) -> bool | None:
    """A user's yes or no; None for anything else."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None
