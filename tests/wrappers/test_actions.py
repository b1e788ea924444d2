"""The composite actions under actions/, checked against GitHub's schema and run by
act as a user's workflow runs them: a folder cached and an image built in one job,
then again in a second job against the same cache server, which must restore it all;
and inputs that would run shell code if any script expanded them."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.wrappers import ROOT, WORKFLOWS, Act, make_repository

ACTIONS = sorted(ROOT.glob("actions/**/action.yml"))
COMPOSITES = [path for path in ACTIONS if "composite" in path.read_text()]
# The engine's own client with BuildKit built in (TESTBED.md); the build's stage
# images carry the inline cache either way, the store is what is tested.
DOCKER_CLIENT = "/usr/bin/docker"

APP_DOCKERFILE = """\
ARG BASE
FROM ${BASE} AS deps
RUN echo dep >/dep.txt && echo {unique} >/unique.txt
FROM deps AS build
COPY src.txt /src.txt
RUN cat /src.txt /dep.txt >/out.txt
FROM ${BASE} AS app
COPY --from=build /out.txt /app/output.txt
"""


# What GitHub sends for a pull request from branch feature into main, as far as the
# context reads it (the pull_request event's documented payload).
PULL_REQUEST = {
    "number": 7,
    "pull_request": {
        "number": 7,
        "head": {"ref": "feature", "repo": {"full_name": "example/app"}},
        "base": {"ref": "main", "repo": {"full_name": "example/app"}},
    },
    "repository": {"full_name": "example/app", "default_branch": "main"},
}


def check_jsonschema(schema: str, files: list[Path]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema]
    return subprocess.run([*command, *map(str, files)], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def test_every_action_matches_githubs_action_schema():
    assert {path.parent.relative_to(ROOT / "actions").as_posix() for path in ACTIONS} == {
        "build", "cache/restore", "cache/save", "cleanup", "context", "export-cache-env", "run",
    }  # fmt: skip
    result = check_jsonschema("vendor.github-actions", ACTIONS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_test_workflows_match_githubs_workflow_schema():
    result = check_jsonschema("vendor.github-workflows", sorted(WORKFLOWS.glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("action", COMPOSITES, ids=lambda p: p.parent.name)
def test_inputs_reach_scripts_only_through_env(action: Path):
    """No expression inside a run: script, where it would be pasted in as code."""
    steps = yaml.safe_load(action.read_text())["runs"]["steps"]
    for step in steps:
        if "run" in step:
            assert "${{" not in step["run"], f"{action}: {step['run']!r}"
            assert step["shell"] == "bash"
    readme = (action.parent / "README.md").read_text()
    document = yaml.safe_load(action.read_text())
    for name in [*document.get("inputs", {}), *document.get("outputs", {})]:
        assert f"`{name}`" in readme, f"{name} is not in {action.parent}/README.md"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"INPUT_STORE": "s3://b/p", "ACTIONS_CACHE_SERVICE_V2": "1",
          "ACTIONS_RESULTS_URL": "https://results/", "ACTIONS_RUNTIME_TOKEN": "t"},
         ["--store", "s3://b/p"]),
        # No input: the CLI picks (tests/unit/test_default_store.py), whatever the job has.
        ({"ACTIONS_CACHE_URL": "http://cache/", "ACTIONS_RUNTIME_TOKEN": "t"}, []),
        ({"CI_INTEGRATION_STORE": "s3://b/p"}, []),
        ({"INPUT_STORE": ""}, []),
    ],
)  # fmt: skip
def test_an_action_passes_its_store_input_on_and_decides_nothing(env, expected):
    script = 'source "$1"; add_store; printf "%s\\n" "${args[@]}"'
    done = subprocess.run(["bash", "-c", script, "-", str(ROOT / "actions/lib/common.sh")],
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert [line for line in done.stdout.splitlines() if line] == expected


@pytest.fixture
def workflow_run(tmp_path, tmp_path_factory, docker_client, busybox_image):
    """A repository with the cache-and-build workflow and one act state for its runs;
    the images it builds are removed at the end."""
    repository = f"ci-integration-test/wrapper-{uuid.uuid4().hex[:8]}"
    files = {
        "data-src/a.txt": "alpha\n",
        "data-src/sub/b.txt": "beta\n",
        "app/Dockerfile": APP_DOCKERFILE.replace(
            "ARG BASE", f"ARG BASE={busybox_image}", 1
        ).replace("{unique}", repository),
        "app/src.txt": "source\n",
    }
    act = Act(make_repository(tmp_path / "repo", "cache-and-build.yml", files), tmp_path / "act")
    results = tmp_path / "results"
    results.mkdir()
    env = {
        "IMAGE": f"{repository}:app",
        "DOCKER_CLIENT": DOCKER_CLIENT,
        "PWNED": str(results / f"pwned-{uuid.uuid4().hex[:8]}"),
        # One install of the package for the session, as one runner keeps it.
        "CI_INTEGRATION_VENV_DIR": str(tmp_path_factory.getbasetemp() / "action-venvs"),
    }

    def run(label: str, event: str = "push", payload: dict | None = None) -> dict:
        result = results / f"{label}.json"
        event_file = None
        if payload is not None:
            event_file = results / f"{label}.event.json"
            event_file.write_text(json.dumps(payload))
        done = act.run(event, env={**env, "RUN_LABEL": label, "RESULT": str(result)},
                       event_file=event_file)  # fmt: skip
        assert result.exists(), done.stdout[-6000:]
        steps = json.loads(result.read_text())
        token = (results / f"{label}.json.token").read_text()
        handed_on = {
            "github_env": (results / f"{label}.json.github-env").read_text().strip(),
            "leftover": (results / f"{label}.json.leftover").read_text().split(),
        }
        return {"steps": steps, "log": done.stdout, "rc": done.returncode, "token": token,
                **handed_on,
                "container": (results / f"{label}.json.container").read_text(),
                "data": (results / f"{label}.json.data").read_text().strip(),
                "listing": (results / f"{label}.json.listing").read_text().split()}  # fmt: skip

    yield run, lambda: forget_images(docker_client, repository), results, env["PWNED"]
    forget_images(docker_client, repository)


def forget_images(client, repository: str) -> None:
    """The engine forgets what the job built: its images and the build cache."""
    for image in client.images.list(name=repository):
        client.images.remove(image.id, force=True)
    # all: BuildKit keeps a step's cache after the images made from it are gone.
    client.api.prune_builds(all=True)


def outputs(run: dict, step: str) -> dict[str, str]:
    return run["steps"][step]["outputs"]


def test_a_second_job_restores_what_the_first_saved(workflow_run):
    run, forget, results, pwned = workflow_run

    first = run("first")
    assert first["rc"] == 0, first["log"][-6000:]
    context = outputs(first, "context")
    assert (context["provider"], context["branch"], context["scope"]) == (
        "github-actions", "main", "branch-main")  # fmt: skip
    assert (context["is-pull-request"], context["read-only"]) == ("false", "false")
    missed = outputs(first, "restore")
    assert (missed["cache-hit"], missed["cache-hit-kind"], missed["cache-matched-key"]) == (
        "false", "miss", "")  # fmt: skip
    built = outputs(first, "build")
    assert built["all-cached"] == "false" and built["image-id"].startswith("sha256:")
    assert {s["restored"] for s in json.loads(built["report"])["stages"]} == {"miss"}
    assert first["container"] == "source\ndep\n"
    saved = outputs(first, "save")
    assert (saved["saved"], saved["unchanged"], saved["scope"]) == ("true", "false", "branch-main")
    assert int(saved["uploaded-bytes"]) > 0

    forget()
    second = run("second")
    assert second["rc"] == 0, second["log"][-6000:]
    restored = outputs(second, "restore")
    assert (restored["cache-hit"], restored["matched-key"], restored["matched-scope"]) == (
        "true", saved["key"], "branch-main")  # fmt: skip
    assert (restored["cache-hit-kind"], restored["cache-matched-key"]) == ("exact", saved["key"])
    assert restored["cache-primary-key"] == missed["cache-primary-key"] == saved["key"]
    assert second["data"] == "first"  # restored, not made again
    # Merged: the job's own file stays beside the cache's.
    assert {"local-second", "made-by"} <= set(second["listing"])
    assert restored["removed-files"] == "0"
    built = outputs(second, "build")
    stages = json.loads(built["report"])["stages"]
    assert built["all-cached"] == "true", stages
    assert {(s["restored"], s["restored_from"]) for s in stages} == {("exact", "branch-main")}
    again = outputs(second, "save")
    # The job's own file came and went, so the folder's time is new: only the
    # listing is uploaded again, no file's bytes.
    assert (again["saved"], again["new-bytes"]) == ("true", "0")
    assert 0 < int(again["uploaded-bytes"]) < 4096

    # A pull request reads its target branch's entries and writes its own scope.
    forget()
    pull = run("pull-request", "pull_request", PULL_REQUEST)
    assert pull["rc"] == 0, pull["log"][-6000:]
    context = outputs(pull, "context")
    assert (context["is-pull-request"], context["pr-number"], context["branch"]) == (
        "true", "7", "feature")  # fmt: skip
    assert (context["scope"], context["scope-chain"]) == ("pr-7", "pr-7 branch-main")
    restored = outputs(pull, "restore")
    assert (restored["cache-hit"], restored["matched-scope"]) == ("true", "branch-main")
    built = outputs(pull, "build")
    assert built["all-cached"] == "true"
    assert {s["restored_from"] for s in json.loads(built["report"])["stages"]} == {"branch-main"}
    into_pr = outputs(pull, "save")
    assert (into_pr["saved"], into_pr["scope"], into_pr["new-bytes"]) == ("true", "pr-7", "0")
    assert int(into_pr["uploaded-bytes"]) < 4096  # the listing alone

    for job in (first, second, pull):
        assert job["steps"]["injected-paths"]["outcome"] == "success"
        assert job["steps"]["injected-build-args"]["outcome"] == "success"
        assert job["steps"]["injected-keys"]["outcome"] == "failure"  # refused, exit 2
        assert "invalid cache key" in job["log"]
        assert job["steps"]["cleanup"]["outcome"] == "success"
        # The token reached the actions (every cache step used gha://) and no log
        # line; no action put it in $GITHUB_ENV or left it in a file of $RUNNER_TEMP.
        assert len(job["token"]) > 20 and job["token"] not in job["log"]
        assert (job["github_env"], job["leftover"]) == ("0", [])
    assert sorted(results.glob(Path(pwned).name + "*")) == []
