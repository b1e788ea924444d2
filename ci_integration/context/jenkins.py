"""Jenkins: multibranch jobs (branch, change request, tag) and plain jobs with the Git plugin.

Variables: ${JENKINS_URL}env-vars.html, the Branch API plugin (BRANCH_*, CHANGE_*,
TAG_*) and the Git plugin (GIT_*).
"""

from __future__ import annotations

from collections.abc import Mapping

from ci_integration.context.model import CIContext, Provider, parse_bool, parse_int

_REMOTE_BRANCH_PREFIXES = ("refs/heads/", "refs/remotes/", "remotes/")


def is_active(env: Mapping[str, str]) -> bool:
    return bool(env.get("JENKINS_URL") or env.get("JENKINS_HOME") or env.get("HUDSON_URL"))


def detect(env: Mapping[str, str]) -> CIContext:
    change_id = env.get("CHANGE_ID")
    tag = env.get("TAG_NAME") or None
    branch_name = env.get("BRANCH_NAME") or None
    default_branch = branch_name if parse_bool(env.get("BRANCH_IS_PRIMARY")) else None

    if change_id:
        branch = env.get("CHANGE_BRANCH") or branch_name
        event = "change-request"
    elif tag:
        branch = None
        event = "tag"
    elif branch_name:
        branch = branch_name
        event = "branch"
    else:
        branch = env.get("GIT_LOCAL_BRANCH") or git_plugin_branch(env.get("GIT_BRANCH"))
        event = None

    return CIContext(
        provider=Provider.JENKINS,
        branch=branch,
        base_branch=env.get("CHANGE_TARGET") or None if change_id else None,
        default_branch=default_branch,
        is_pull_request=bool(change_id),
        pr_number=parse_int(change_id),
        is_fork=bool(change_id and env.get("CHANGE_FORK")),
        tag=tag,
        commit=env.get("GIT_COMMIT") or None,
        build_id=env.get("BUILD_ID") or env.get("BUILD_NUMBER") or None,
        build_url=env.get("BUILD_URL") or None,
        job_name=env.get("JOB_NAME") or None,
        run_attempt=None,
        event=event,
        repository=env.get("GIT_URL") or env.get("CHANGE_URL") or None,
    )


def git_plugin_branch(value: str | None) -> str | None:
    """``origin/feature/x`` -> ``feature/x``: the Git plugin names the remote-tracking branch."""
    if not value or value == "detached":
        return None
    for prefix in _REMOTE_BRANCH_PREFIXES:
        if value.startswith(prefix):
            value = value[len(prefix) :]
            if prefix != "refs/heads/":
                value = value.partition("/")[2] or value
            return value
    remote, slash, rest = value.partition("/")
    # Without refs/, the first segment is the remote when it looks like one.
    if slash and remote in {"origin", "upstream"}:
        return rest
    return value
