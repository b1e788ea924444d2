"""GitHub Actions: the context from the runner's variables and the event payload.

Variables: https://docs.github.com/actions/learn-github-actions/variables
Payloads:  https://docs.github.com/webhooks/webhook-events-and-payloads
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from ci_integration.context.model import CIContext, Provider, parse_int

log = logging.getLogger(__name__)

PULL_REQUEST_EVENTS = frozenset({"pull_request", "pull_request_target", "pull_request_review"})
_PULL_REF = re.compile(r"^refs/pull/(\d+)/(?:merge|head)$")
_MERGE_QUEUE_REF = re.compile(r"^refs/heads/gh-readonly-queue/(.+)/pr-(\d+)-[0-9a-f]+$")


def is_active(env: Mapping[str, str]) -> bool:
    return env.get("GITHUB_ACTIONS") == "true"


def detect(env: Mapping[str, str]) -> CIContext:
    event_name = env.get("GITHUB_EVENT_NAME", "")
    payload = read_event(env.get("GITHUB_EVENT_PATH"))
    ref = env.get("GITHUB_REF", "")
    repository = payload.get("repository") or {}

    branch = _strip(ref, "refs/heads/")
    tag = _strip(ref, "refs/tags/")
    base_branch = None
    pr_number = None
    is_fork = False
    is_pull_request = event_name in PULL_REQUEST_EVENTS

    if is_pull_request:
        pull = payload.get("pull_request") or {}
        branch = env.get("GITHUB_HEAD_REF") or _dig(pull, "head", "ref")
        base_branch = env.get("GITHUB_BASE_REF") or _dig(pull, "base", "ref")
        pr_number = _pr_number(pull.get("number") or payload.get("number"), ref)
        is_fork = _is_fork(pull, env.get("GITHUB_REPOSITORY"))
        tag = None
    elif event_name == "merge_group" or _MERGE_QUEUE_REF.match(ref):
        queue = payload.get("merge_group") or {}
        match = _MERGE_QUEUE_REF.match(ref)
        base_branch = _strip(queue.get("base_ref", ""), "refs/heads/") or (
            match.group(1) if match else None
        )

    default_branch = repository.get("default_branch")
    if not default_branch and event_name == "schedule":
        # Scheduled workflows always run on the default branch's latest commit.
        default_branch = branch

    return CIContext(
        provider=Provider.GITHUB_ACTIONS,
        branch=branch,
        base_branch=base_branch,
        default_branch=default_branch,
        is_pull_request=is_pull_request,
        pr_number=pr_number,
        is_fork=is_fork,
        tag=tag,
        commit=env.get("GITHUB_SHA") or None,
        build_id=env.get("GITHUB_RUN_ID") or None,
        build_url=_run_url(env),
        job_name=_job_name(env),
        run_attempt=parse_int(env.get("GITHUB_RUN_ATTEMPT")),
        event=event_name or None,
        repository=env.get("GITHUB_REPOSITORY") or repository.get("full_name"),
    )


def read_event(path: str | None) -> dict[str, Any]:
    """The event payload, or {} with a warning when it is missing or malformed."""
    if not path:
        log.warning("GITHUB_EVENT_PATH is not set: default branch and fork status unknown")
        return {}
    try:
        with open(path, encoding="utf-8") as stream:
            payload = json.load(stream)
    except OSError as exc:
        log.warning("cannot read the event payload %s: %s", path, exc.strerror)
        return {}
    except ValueError as exc:
        log.warning("the event payload %s is not valid JSON: %s", path, exc)
        return {}
    if not isinstance(payload, dict):
        log.warning("the event payload %s is not a JSON object", path)
        return {}
    return payload


def _is_fork(pull: Mapping[str, Any], repository: str | None) -> bool:
    if not pull:
        return False
    head_repo = _dig(pull, "head", "repo")
    if not head_repo:
        # The fork was deleted after the pull request was opened.
        return True
    base_name = _dig(pull, "base", "repo", "full_name") or repository
    if base_name and head_repo.get("full_name"):
        return bool(head_repo["full_name"] != base_name)
    return bool(head_repo.get("fork"))


def _pr_number(from_payload: Any, ref: str) -> int | None:
    number = parse_int(from_payload)
    if number is not None:
        return number
    match = _PULL_REF.match(ref)
    return int(match.group(1)) if match else None


def _run_url(env: Mapping[str, str]) -> str | None:
    server = env.get("GITHUB_SERVER_URL", "https://github.com")
    repository, run_id = env.get("GITHUB_REPOSITORY"), env.get("GITHUB_RUN_ID")
    if not (repository and run_id):
        return None
    url = f"{server}/{repository}/actions/runs/{run_id}"
    attempt = env.get("GITHUB_RUN_ATTEMPT")
    return f"{url}/attempts/{attempt}" if attempt and attempt != "1" else url


def _job_name(env: Mapping[str, str]) -> str | None:
    parts = [env.get("GITHUB_WORKFLOW"), env.get("GITHUB_JOB")]
    return "/".join(part for part in parts if part) or None


def _strip(ref: str, prefix: str) -> str | None:
    return ref[len(prefix) :] if ref.startswith(prefix) else None


def _dig(data: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(name)
    return data
