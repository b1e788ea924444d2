"""CI context detection over environments as GitHub Actions and Jenkins set them.

GitHub payloads follow the documented webhook shapes (fields this tool reads are
kept, the rest trimmed); Jenkins variables are those of the Branch API and Git plugins.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ci_integration.context import Provider, detect


def hashed(safe: str, original: str) -> str:
    """A scope whose name had to be changed carries 8 hex digits of the original's sha256."""
    return f"{safe}-{hashlib.sha256(original.encode()).hexdigest()[:8]}"


REPO = {"full_name": "acme/widget", "default_branch": "main", "fork": False}
FORK = {"full_name": "mallory/widget", "default_branch": "main", "fork": True}


def pull_request_payload(number: int, head_ref: str, head_repo: dict | None) -> dict[str, Any]:
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"ref": head_ref, "sha": "a" * 40, "repo": head_repo},
            "base": {"ref": "main", "sha": "b" * 40, "repo": REPO},
        },
        "repository": REPO,
    }


def github(event: str, ref: str, payload: dict | None, **extra: str) -> dict[str, Any]:
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_REF": ref,
        "GITHUB_SHA": "c" * 40,
        "GITHUB_REPOSITORY": "acme/widget",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_RUN_ID": "9001",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_WORKFLOW": "CI",
        "GITHUB_JOB": "build",
        **extra,
    }
    return {"env": env, "payload": payload}


def jenkins(**variables: str) -> dict[str, Any]:
    env = {
        "JENKINS_URL": "https://ci.example.com/",
        "BUILD_ID": "42",
        "BUILD_NUMBER": "42",
        "BUILD_URL": "https://ci.example.com/job/widget/job/main/42/",
        "JOB_NAME": "widget/main",
        "GIT_COMMIT": "d" * 40,
        **variables,
    }
    return {"env": env, "payload": None}


CASES = {
    "github push to the default branch": (
        github("push", "refs/heads/main", {"ref": "refs/heads/main", "repository": REPO}),
        {
            "branch": "main",
            "default_branch": "main",
            "scope": "branch-main",
            "scope_chain": ["branch-main"],
            "is_pull_request": False,
        },
    ),
    "github push to a feature branch": (
        github("push", "refs/heads/feature/x", {"repository": REPO}),
        {
            "branch": "feature/x",
            "tag": None,
            "is_pull_request": False,
            "scope_chain": [hashed("branch-feature-x", "branch-feature/x"), "branch-main"],
        },
    ),
    "github push of a tag": (
        github("push", "refs/tags/v1.2.0", {"repository": REPO}, GITHUB_REF_TYPE="tag"),
        {
            "branch": None,
            "tag": "v1.2.0",
            "scope": "tag-v1.2.0",
            "scope_chain": ["tag-v1.2.0", "branch-main"],
        },
    ),
    "github pull_request from the same repository": (
        github(
            "pull_request",
            "refs/pull/12/merge",
            pull_request_payload(12, "fix-1", REPO),
            GITHUB_HEAD_REF="fix-1",
            GITHUB_BASE_REF="main",
        ),
        {
            "branch": "fix-1",
            "base_branch": "main",
            "pr_number": 12,
            "is_fork": False,
            "is_pull_request": True,
            "scope_chain": ["pr-12", "branch-main"],
            "read_only": False,
        },
    ),
    "github pull_request from a fork": (
        github(
            "pull_request",
            "refs/pull/13/merge",
            pull_request_payload(13, "main", FORK),
            GITHUB_HEAD_REF="main",
            GITHUB_BASE_REF="main",
        ),
        {
            "branch": "main",
            "base_branch": "main",
            "pr_number": 13,
            "is_fork": True,
            "scope": "pr-13",
            "read_only": True,
        },
    ),
    "github pull_request from a deleted fork": (
        github(
            "pull_request",
            "refs/pull/14/merge",
            pull_request_payload(14, "wip", None),
            GITHUB_HEAD_REF="wip",
            GITHUB_BASE_REF="main",
        ),
        {"is_fork": True, "pr_number": 14},
    ),
    "github pull_request_target from a fork runs on the base ref": (
        github(
            "pull_request_target",
            "refs/heads/main",
            pull_request_payload(15, "patch", FORK),
            GITHUB_HEAD_REF="patch",
            GITHUB_BASE_REF="main",
        ),
        {"branch": "patch", "base_branch": "main", "is_fork": True, "scope": "pr-15"},
    ),
    "github pull_request into a release branch": (
        github(
            "pull_request",
            "refs/pull/16/merge",
            {**pull_request_payload(16, "fix", REPO), "number": 16},
            GITHUB_HEAD_REF="fix",
            GITHUB_BASE_REF="release/1.x",
        ),
        {
            "base_branch": "release/1.x",
            "default_branch": "main",
            "scope_chain": [
                "pr-16",
                hashed("branch-release-1.x", "branch-release/1.x"),
                "branch-main",
            ],
        },
    ),
    "github merge_group": (
        github(
            "merge_group",
            "refs/heads/gh-readonly-queue/main/pr-17-" + "e" * 40,
            {
                "merge_group": {
                    "head_ref": "refs/heads/gh-readonly-queue/main/pr-17-" + "e" * 40,
                    "base_ref": "refs/heads/main",
                    "head_sha": "e" * 40,
                },
                "repository": REPO,
            },
        ),
        {"base_branch": "main", "is_pull_request": False, "default_branch": "main"},
    ),
    "github workflow_dispatch on a release branch": (
        github(
            "workflow_dispatch",
            "refs/heads/release/2.0",
            {"ref": "refs/heads/release/2.0", "inputs": {}, "repository": REPO},
        ),
        {"branch": "release/2.0", "event": "workflow_dispatch", "default_branch": "main"},
    ),
    "github schedule without repository in the payload": (
        github("schedule", "refs/heads/trunk", {"schedule": "0 3 * * *"}),
        {"branch": "trunk", "default_branch": "trunk", "scope_chain": ["branch-trunk"]},
    ),
    "github pull_request without an event file": (
        github(
            "pull_request",
            "refs/pull/18/merge",
            None,
            GITHUB_HEAD_REF="topic",
            GITHUB_BASE_REF="main",
        ),
        {"pr_number": 18, "branch": "topic", "is_fork": False, "default_branch": None},
    ),
    "github re-run attempt": (
        github("push", "refs/heads/main", {"repository": REPO}, GITHUB_RUN_ATTEMPT="2"),
        {
            "run_attempt": 2,
            "build_id": "9001",
            "job_name": "CI/build",
            "build_url": "https://github.com/acme/widget/actions/runs/9001/attempts/2",
        },
    ),
    "jenkins multibranch primary branch": (
        jenkins(BRANCH_NAME="main", BRANCH_IS_PRIMARY="true"),
        {
            "provider": "jenkins",
            "branch": "main",
            "default_branch": "main",
            "scope_chain": ["branch-main"],
            "build_id": "42",
            "event": "branch",
        },
    ),
    "jenkins multibranch feature branch": (
        jenkins(BRANCH_NAME="feature/login"),
        {
            "branch": "feature/login",
            "default_branch": None,
            "is_pull_request": False,
            "scope_chain": [hashed("branch-feature-login", "branch-feature/login")],
        },
    ),
    "jenkins change request from the same repository": (
        jenkins(
            BRANCH_NAME="PR-7",
            CHANGE_ID="7",
            CHANGE_TARGET="develop",
            CHANGE_BRANCH="feature/api",
            CHANGE_URL="https://github.com/acme/widget/pull/7",
        ),
        {
            "branch": "feature/api",
            "base_branch": "develop",
            "pr_number": 7,
            "is_pull_request": True,
            "is_fork": False,
            "event": "change-request",
            "scope_chain": ["pr-7", "branch-develop"],
        },
    ),
    "jenkins change request from a fork": (
        jenkins(
            BRANCH_NAME="PR-8",
            CHANGE_ID="8",
            CHANGE_TARGET="main",
            CHANGE_BRANCH="main",
            CHANGE_FORK="mallory",
        ),
        {"is_fork": True, "read_only": True, "scope": "pr-8"},
    ),
    "jenkins multibranch tag": (
        jenkins(BRANCH_NAME="v3.1", TAG_NAME="v3.1", TAG_TIMESTAMP="1700000000000"),
        {"tag": "v3.1", "branch": None, "scope": "tag-v3.1", "event": "tag"},
    ),
    "jenkins plain job with the git plugin": (
        jenkins(GIT_BRANCH="origin/feature/x", GIT_URL="https://example.com/widget.git"),
        {"branch": "feature/x", "repository": "https://example.com/widget.git", "event": None},
    ),
    "jenkins plain job checked out to a local branch": (
        jenkins(GIT_BRANCH="origin/release", GIT_LOCAL_BRANCH="release"),
        {"branch": "release"},
    ),
    "jenkins plain job with a full remote ref": (
        jenkins(GIT_BRANCH="refs/remotes/upstream/hotfix/1"),
        {"branch": "hotfix/1"},
    ),
    "jenkins plain job on a detached head": (
        jenkins(GIT_BRANCH="detached"),
        {"branch": None, "scope": "commit-dddddddddddd"},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_detects(case, tmp_path: Path) -> None:
    setup, expected = case
    env = dict(setup["env"])
    if setup["payload"] is not None:
        event_path = tmp_path / "event.json"
        event_path.write_text(json.dumps(setup["payload"]))
        env["GITHUB_EVENT_PATH"] = str(event_path)
    detected = detect(env).as_dict()
    assert {name: detected[name] for name in expected} == expected


def test_github_build_url_and_commit() -> None:
    env = github("push", "refs/heads/main", None)["env"]
    context = detect(env)
    assert context.provider is Provider.GITHUB_ACTIONS
    assert context.build_url == "https://github.com/acme/widget/actions/runs/9001"
    assert context.commit == "c" * 40


def test_malformed_event_file_warns_and_keeps_the_rest(tmp_path: Path, caplog) -> None:
    event_path = tmp_path / "event.json"
    event_path.write_text("{not json")
    env = github(
        "pull_request",
        "refs/pull/5/merge",
        None,
        GITHUB_HEAD_REF="x",
        GITHUB_BASE_REF="main",
        GITHUB_EVENT_PATH=str(event_path),
    )["env"]
    context = detect(env)
    assert (context.pr_number, context.branch, context.base_branch) == (5, "x", "main")
    assert "not valid JSON" in caplog.text


def test_missing_event_file_warns(tmp_path: Path, caplog) -> None:
    env = github("push", "refs/heads/main", None, GITHUB_EVENT_PATH=str(tmp_path / "gone.json"))[
        "env"
    ]
    assert detect(env).branch == "main"
    assert "cannot read the event payload" in caplog.text


def test_overrides_win_over_detection() -> None:
    env = {
        **jenkins(BRANCH_NAME="feature/a")["env"],
        "CI_INTEGRATION_BRANCH": "feature/b",
        "CI_INTEGRATION_DEFAULT_BRANCH": "trunk",
        "CI_INTEGRATION_PR_NUMBER": "99",
    }
    context = detect(env)
    assert (context.branch, context.default_branch) == ("feature/b", "trunk")
    assert context.is_pull_request and context.scope == "pr-99"
    assert context.scope_chain == ["pr-99", "branch-trunk"]


def test_bad_override_is_ignored_with_a_warning(caplog) -> None:
    env = {
        **jenkins(BRANCH_NAME="main")["env"],
        "CI_INTEGRATION_PR_NUMBER": "abc",
        "CI_INTEGRATION_PROVIDER": "travis",
    }
    context = detect(env)
    assert context.pr_number is None and context.provider is Provider.JENKINS
    assert "not a number" in caplog.text and "use one of" in caplog.text


def test_forced_provider_and_scope() -> None:
    env = {
        "CI_INTEGRATION_PROVIDER": "jenkins",
        "BRANCH_NAME": "main",
        "CI_INTEGRATION_SCOPE": "nightly builds",
    }
    context = detect(env)
    assert context.provider is Provider.JENKINS
    assert context.scope.startswith("nightly-builds-")
