"""The cache service's token goes from actions/export-cache-env (run by node, as the
runner runs it) to the next ci-integration call in a private file, and no further:
never into $GITHUB_ENV, and the file is gone once the call has read it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from ci_integration.cli import main
from ci_integration.errors import UsageError
from ci_integration.store.gha.handoff import ENV_FILE, take_handed_env
from tests.store.gha_twirp_service import job_env
from tests.wrappers import ROOT

SCRIPT = ROOT / "actions" / "export-cache-env" / "index.js"


def export_cache_env(tmp_path: Path, service_env: dict[str, str]) -> dict[str, str]:
    """Run the action as the runner does: node, the job's variables, its files."""
    (tmp_path / "runner-temp").mkdir(exist_ok=True)
    github_env, github_output = tmp_path / "github-env", tmp_path / "github-output"
    github_env.write_text("")
    github_output.write_text("")
    env = {"PATH": os.environ["PATH"], "GITHUB_ENV": str(github_env),
           "GITHUB_OUTPUT": str(github_output), "RUNNER_TEMP": str(tmp_path / "runner-temp"),
           **service_env}  # fmt: skip
    done = subprocess.run(["node", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert github_env.read_text() == ""  # nothing for the job's later steps
    token = service_env.get("ACTIONS_RUNTIME_TOKEN")
    if token:
        assert done.stdout.count(token) == 1 and f"::add-mask::{token}" in done.stdout
    return dict(line.split("=", 1) for line in github_output.read_text().splitlines())


def test_the_token_reaches_the_next_call_and_no_later_one(
    twirp_service, tmp_path, base_env, monkeypatch, capsys
):
    outputs = export_cache_env(tmp_path, job_env(twirp_service))
    handed = Path(outputs["env-file"])
    assert outputs["cache-service"] == "v2"
    assert stat.S_IMODE(handed.stat().st_mode) == 0o600
    assert stat.S_IMODE(handed.parent.stat().st_mode) == 0o700
    assert handed.parent.parent == tmp_path / "runner-temp"

    workspace = tmp_path / "ws"
    (workspace / "data").mkdir(parents=True)
    (workspace / "data" / "a.txt").write_text("alpha\n")
    monkeypatch.chdir(workspace)
    env = {**base_env, "JENKINS_URL": "https://ci.example.com/", "BRANCH_NAME": "main",
           ENV_FILE: str(handed)}  # fmt: skip
    command = ["cache", "save", "data", "--key", "handed", "--store", "gha://", "--strict"]
    assert main([*command, "--json"], env=env) == 0
    assert json.loads(capsys.readouterr().out)["saved"] is True
    assert {auth for _, auth in twirp_service.seen} == {f"Bearer {twirp_service.token}"}
    assert not handed.parent.exists()  # read once, then removed with its folder

    # The next call has no token: the file is gone, and it says why.
    assert main(command, env=env) == 3
    err = capsys.readouterr().err
    assert "is gone (a ci-integration step took it already)" in err
    assert twirp_service.token not in err


def test_without_a_cache_service_the_file_holds_nothing_secret(tmp_path):
    outputs = export_cache_env(tmp_path, {})
    assert outputs["cache-service"] == "none"
    assert json.loads(Path(outputs["env-file"]).read_text()) == {}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "passwd", "is not a file export-cache-env made"),
        (lambda d: d / "ci-integration-cache-env-x" / "other.json", "is not a file export-cache"),
        (lambda d: d / "ci-integration-cache-env-x" / "env.json", "not a private file"),
    ],
)
def test_a_file_that_export_cache_env_did_not_make_is_refused_and_kept(tmp_path, make, message):
    path = make(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"ACTIONS_RUNTIME_TOKEN": "x"}')
    os.chmod(path, 0o644)
    with pytest.raises(UsageError, match=message):
        take_handed_env({ENV_FILE: str(path)})
    assert path.exists()


def test_only_the_cache_service_variables_are_taken(tmp_path):
    folder = tmp_path / "ci-integration-cache-env-abc"
    folder.mkdir(mode=0o700)
    handed = folder / "env.json"
    handed.write_text(json.dumps({"ACTIONS_RUNTIME_TOKEN": "t", "PATH": "/evil"}))
    os.chmod(handed, 0o600)
    env = take_handed_env({ENV_FILE: str(handed), "PATH": "/usr/bin"})
    assert env == {"ACTIONS_RUNTIME_TOKEN": "t", "PATH": "/usr/bin"}
    assert not folder.exists()
