"""Context detection in real git repositories made in temporary folders."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest

from ci_integration.cli import main
from ci_integration.context import Provider, detect


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return result.stdout.strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A repository with two commits on 'trunk' and a tag, cloned from by the tests."""
    repo = tmp_path / "origin"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "trunk")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    for n in (1, 2):
        (repo / "file.txt").write_text(f"{n}\n")
        git(repo, "add", "file.txt")
        git(repo, "commit", "-q", "-m", f"commit {n}")
    git(repo, "tag", "v1.0")
    return repo


def test_clone_knows_branch_commit_and_default_branch(origin, tmp_path, base_env):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    git(clone, "switch", "-q", "-c", "feature/y")
    context = detect(base_env, clone)
    assert context.provider is Provider.LOCAL
    assert context.branch == "feature/y"
    assert context.default_branch == "trunk"
    assert context.commit == git(origin, "rev-parse", "HEAD")
    assert context.repository == str(origin)
    assert context.scope_chain[1] == "branch-trunk"


def test_shallow_clone(origin, tmp_path, base_env):
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(clone))
    assert git(clone, "rev-parse", "--is-shallow-repository") == "true"
    context = detect(base_env, clone)
    assert (context.branch, context.default_branch) == ("trunk", "trunk")
    assert context.commit == git(origin, "rev-parse", "HEAD")


def test_detached_head_at_a_tag(origin, base_env):
    git(origin, "checkout", "-q", "--detach", "v1.0")
    context = detect(base_env, origin)
    assert context.branch is None
    assert context.tag == "v1.0"
    assert context.scope == "tag-v1.0"


def test_detached_head_without_a_tag(origin, base_env):
    git(origin, "checkout", "-q", "--detach", "HEAD~1")
    context = detect(base_env, origin)
    assert (context.branch, context.tag) == (None, None)
    assert context.scope == "commit-" + git(origin, "rev-parse", "HEAD")[:12]


def test_no_remote_means_no_default_branch(origin, base_env):
    context = detect(base_env, origin)
    assert (context.branch, context.default_branch, context.repository) == ("trunk", None, None)


def test_repository_without_commits(tmp_path, base_env):
    git(tmp_path, "init", "-q", "-b", "start")
    context = detect(base_env, tmp_path)
    assert (context.branch, context.commit) == ("start", None)


def test_not_a_repository_is_said_in_the_debug_log(tmp_path, base_env, caplog):
    caplog.set_level(logging.INFO)
    assert detect(base_env, tmp_path).branch is None
    assert "not in a git repository" not in caplog.text
    caplog.set_level(logging.DEBUG)
    context = detect({**base_env, "GIT_CEILING_DIRECTORIES": str(tmp_path)}, tmp_path)
    assert context.branch is None and context.scope == "detached"
    assert "not in a git repository" in caplog.text


def test_git_missing_in_a_checkout_warns(tmp_path, caplog):
    (tmp_path / ".git").mkdir()  # a checkout, as far as can be seen without git
    context = detect({"PATH": str(tmp_path)}, tmp_path)
    assert context.provider is Provider.LOCAL and context.branch is None
    assert "git is not available" in caplog.text


def test_jenkins_gaps_filled_from_the_checkout(origin, tmp_path, base_env):
    clone = tmp_path / "ws"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    env = {**base_env, "JENKINS_URL": "https://ci.example.com/", "BRANCH_NAME": "feature/z"}
    context = detect(env, clone)
    assert (context.branch, context.default_branch) == ("feature/z", "trunk")
    assert context.commit == git(origin, "rev-parse", "HEAD")


def test_cli_json_for_a_pull_request_from_a_fork(tmp_path, base_env, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    event = tmp_path / "event.json"
    event.write_text(
        json.dumps(
            {
                "number": 21,
                "pull_request": {
                    "number": 21,
                    "head": {"ref": "main", "repo": {"full_name": "mallory/widget", "fork": True}},
                    "base": {"ref": "main", "repo": {"full_name": "acme/widget", "fork": False}},
                },
                "repository": {"full_name": "acme/widget", "default_branch": "main"},
            }
        )
    )
    env = {
        **base_env,
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_REF": "refs/pull/21/merge",
        "GITHUB_HEAD_REF": "main",
        "GITHUB_BASE_REF": "main",
        "GITHUB_EVENT_PATH": str(event),
    }
    assert main(["context", "--json"], env=env) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["branch"], data["base_branch"], data["pr_number"]) == ("main", "main", 21)
    assert data["is_fork"] is True and data["read_only"] is True
    assert data["scope"] == "pr-21" != data["scope_chain"][1] == "branch-main"


def test_cli_github_output_and_shell_round_trip(tmp_path, base_env, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "github_output"
    env = {
        **base_env,
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_REF": "refs/heads/dev",
        "GITHUB_OUTPUT": str(output),
        "CI_INTEGRATION_DEFAULT_BRANCH": "main",
    }
    assert main(["context", "--github-output"], env=env) == 0
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert outputs["branch"] == "dev" and outputs["scope-chain"] == "branch-dev branch-main"
    capsys.readouterr()
    assert main(["context", "--shell"], env=env) == 0
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in capsys.readouterr().out.splitlines()
    )
    # Read back through the overrides, the shell lines give the same context on a bare env.
    again = detect({**base_env, **exported})
    assert again.as_dict() == detect(env).as_dict()


def test_cli_github_output_outside_github_is_a_usage_error(base_env, capsys):
    assert main(["context", "--github-output"], env=base_env) == 2
    assert "GITHUB_OUTPUT" in capsys.readouterr().err


def test_a_folder_outside_any_checkout_does_not_ask_git(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    context = detect({"PATH": str(tmp_path)}, tmp_path)  # asking git would fail: not on PATH
    assert context.provider is Provider.LOCAL and context.branch is None
    assert "not in a git repository" in caplog.text
    assert "git is not available" not in caplog.text
