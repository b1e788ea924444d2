"""Which Jenkins job holds the archived cache of each scope of a job's chain.

A multibranch project keeps one job a branch, change request or tag, named
``PROJECT/ITEM`` in ``JOB_NAME``; the item of a branch is the branch name with the
few characters that would break a URL segment escaped, as the Branch API's
NameEncoder does (``feature/x`` is the job ``feature%2Fx``). So the job's own scope
is ``JOB_NAME``, and the pull request's target and the default branch are their
items beside it. A job outside a multibranch project (no ``BRANCH_NAME``) has only
its own builds to read.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from ci_integration.context.model import CIContext, scope_for

# As jenkins.branch.NameEncoder escapes them; everything else is escaped again in URLs.
_ESCAPED = {"#": "%23", "%": "%25", "/": "%2F", "?": "%3F", "[": "%5B", "]": "%5D", "\\": "%5C"}
_WHOLE_NAMES = {"": "%00", ".": "%2E", "..": "%2E."}


def item_name(branch: str) -> str:
    """The job name the Branch API gives ``branch`` inside its project."""
    if branch in _WHOLE_NAMES:
        return _WHOLE_NAMES[branch]
    return "".join(_ESCAPED.get(char, char) for char in branch)


def job_url_path(job_name: str) -> str:
    """``a/b%2Fc`` -> ``job/a/job/b%252Fc/``: each item of the full name a segment."""
    return "".join(f"job/{urllib.parse.quote(item, safe='')}/" for item in job_name.split("/"))


def jobs_by_scope(job: CIContext, env: Mapping[str, str]) -> dict[str, str]:
    """Scope -> full job name, for the scopes of ``job``'s chain that Jenkins keeps."""
    own = env.get("JOB_NAME", "").strip("/")
    if not own:
        return {}
    jobs = {job.scope: own}
    project, slash, _ = own.rpartition("/")
    if not slash or not env.get("BRANCH_NAME"):
        return jobs
    for branch in (job.base_branch, job.default_branch):
        if branch:
            jobs.setdefault(scope_for("branch", branch), f"{project}/{item_name(branch)}")
    return jobs
