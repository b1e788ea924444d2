"""The JSON every command prints is an interface: workflows read its fields with
fromJSON and jq. So it is held to a golden file, tests/unit/golden/json_outputs.json:
the same inputs give the same document, field for field, whatever is rebuilt inside.

The commands that need no engine run here, in one job after another on one store:
the context of a Jenkins pull request and of a GitHub push, a first save, an
unchanged save, restores (exact, by prefix, a miss, a lookup), a fork's save, the
store's list and a pruning dry run. What changes from run to run (seconds, dates,
the temporary folder) is replaced by a placeholder before comparing.

After a change to the JSON that is meant, rewrite the file with
``UPDATE_GOLDEN=1 python -m pytest tests/unit/test_json_outputs.py`` and say why in
the commit: a field renamed or gone breaks the workflows that read it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from ci_integration.cli import main

GOLDEN = Path(__file__).parent / "golden" / "json_outputs.json"
VOLATILE = {"seconds": 0, "created": "<time>", "last_used": "<time>"}
JENKINS_PR = {
    "JENKINS_URL": "https://ci.example.com/",
    "JOB_NAME": "shop/PR-12",
    "BUILD_NUMBER": "31",
    "BUILD_URL": "https://ci.example.com/job/shop/job/PR-12/31/",
    "BRANCH_NAME": "PR-12",
    "CHANGE_ID": "12",
    "CHANGE_TARGET": "main",
    "CHANGE_BRANCH": "feature/cart",
    "GIT_COMMIT": "0123456789abcdef0123456789abcdef01234567",
    "GIT_URL": "https://git.example.com/shop.git",
}
JENKINS_MAIN = {**JENKINS_PR, "JOB_NAME": "shop/main", "BRANCH_NAME": "main",
                "BRANCH_IS_PRIMARY": "true", "CHANGE_ID": "", "CHANGE_TARGET": "",
                "CHANGE_BRANCH": ""}  # fmt: skip
JENKINS_FORK = {**JENKINS_PR, "CHANGE_FORK": "someone/shop"}


def normalized(value: Any, tmp: str) -> Any:
    if isinstance(value, dict):
        return {k: VOLATILE.get(k, normalized(v, tmp)) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(item, tmp) for item in value]
    if isinstance(value, str):
        return re.sub(r"\d{4}-\d\d-\d\dT[0-9:.+Z-]+", "<time>", value.replace(tmp, "<tmp>"))
    return value


def github_push(tmp_path: Path) -> dict[str, str]:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"repository": {"default_branch": "main"}}))
    return {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push",
            "GITHUB_EVENT_PATH": str(event), "GITHUB_REF": "refs/heads/release/2.x",
            "GITHUB_REF_NAME": "release/2.x", "GITHUB_SHA": "f" * 40,
            "GITHUB_REPOSITORY": "shop/web", "GITHUB_RUN_ID": "9001",
            "GITHUB_RUN_ATTEMPT": "2", "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_WORKFLOW": "ci", "GITHUB_JOB": "build"}  # fmt: skip


@pytest.fixture
def outputs(tmp_path, base_env, capsys, monkeypatch) -> dict[str, Any]:
    workspace = tmp_path / "ws"
    (workspace / "deps" / "sub").mkdir(parents=True)
    (workspace / "deps" / "a.txt").write_text("alpha\n" * 100)
    (workspace / "deps" / "sub" / "b.bin").write_bytes(bytes(range(256)) * 64)
    (workspace / "lock.txt").write_text("v1\n")
    # Dates are in the listing, so in the size of what is uploaded.
    for path in [*(workspace / "deps").rglob("*"), workspace / "deps"]:
        os.utime(path, ns=(1_700_000_000 * 10**9,) * 2)
    monkeypatch.chdir(workspace)
    store = {"CI_INTEGRATION_CACHE_DIR": str(tmp_path / "store")}
    jobs = {
        "main": {**base_env, **store, **JENKINS_MAIN},
        "pr": {**base_env, **store, **JENKINS_PR},
        "fork": {**base_env, **store, **JENKINS_FORK},
        "github": {**base_env, **store, **github_push(tmp_path)},
    }
    steps = [
        ("context of a Jenkins pull request", "pr", ["context", "--json"]),
        ("context of a GitHub push", "github", ["context", "--json"]),
        ("first save", "main",
         ["cache", "save", "deps", "--key", "deps-{hash:lock.txt}", "--json"]),
        ("unchanged save", "main",
         ["cache", "save", "deps", "--key", "deps-{hash:lock.txt}", "--json"]),
        ("exact restore", "pr",
         ["cache", "restore", "deps", "--key", "deps-{hash:lock.txt}", "--json"]),
        ("restore by prefix", "pr",
         ["cache", "restore", "deps", "--key", "deps-other", "--restore-key", "deps-",
          "--json"]),
        ("lookup only", "pr",
         ["cache", "restore", "deps", "--key", "deps-{hash:lock.txt}", "--lookup-only",
          "--json"]),
        ("miss", "pr", ["cache", "restore", "deps", "--key", "nothing", "--json"]),
        ("save in a pull request", "pr", ["cache", "save", "deps", "--key", "pr-deps", "--json"]),
        ("save by a fork", "fork", ["cache", "save", "deps", "--key", "fork-deps", "--json"]),
        ("list", "main", ["cache", "list", "--json"]),
        ("prune dry run", "main", ["cache", "prune", "--keep-last", "1", "--dry-run", "--json"]),
    ]  # fmt: skip
    capsys.readouterr()
    documents = {}
    for name, job, argv in steps:
        assert main(argv, env=jobs[job]) == 0, name
        documents[name] = normalized(json.loads(capsys.readouterr().out), str(tmp_path))
    return documents


def test_every_json_output_matches_the_golden_file(outputs):
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(outputs, indent=2, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert set(outputs) == set(golden)
    for name, document in outputs.items():
        assert document == golden[name], name
