"""The janitor's decisions with the real CI clients (python-jenkins, PyGithub) asking
loopback servers that answer as Jenkins and GitHub document, and with no server at all.

Answer shapes, and where they are documented:
- Jenkins, ``GET /job/A/job/B/N/api/json``: ``building`` (true while the build runs),
  ``result`` (null until it ends), ``number``, ``url``, ``_class`` -- the remote access
  API, https://www.jenkins.io/doc/book/using/remote-access-api/ (each page's ``api/``
  lists them). ``GET /crumbIssuer/api/json``: ``crumb``, ``crumbRequestField`` --
  https://www.jenkins.io/doc/book/security/csrf-protection/.
- GitHub, ``GET /repos/OWNER/REPO``: ``full_name``, ``url``, ``owner`` -- "Get a
  repository", https://docs.github.com/rest/repos/repos#get-a-repository.
  ``GET /repos/OWNER/REPO/actions/runs/RUN_ID``: ``id``, ``status``
  (``queued``, ``in_progress``, ... ``completed``), ``conclusion`` (null until
  completed), ``run_attempt``, ``html_url`` -- REST API "Get a workflow run",
  https://docs.github.com/rest/actions/workflow-runs#get-a-workflow-run.
"""

from __future__ import annotations

import base64
import datetime
import logging
import time

import pytest

from ci_integration.containers import janitor
from ci_integration.containers import labels as names
from ci_integration.containers.cleanup import Policy
from ci_integration.containers.owner import Host, Owner
from ci_integration.context import CIContext, Provider
from tests.support.loopback_http import closed_port_url, serve

NOW = time.time()
POLICY = Policy(max_age=86400, grace=60)
ELSEWHERE = Owner(Host("another-agent", "pid:[4026531836]"), 4242, 99)
CRUMB = {
    "_class": "hudson.security.csrf.DefaultCrumbIssuer",
    "crumb": "5f1e",
    "crumbRequestField": "Jenkins-Crumb",
}


def jenkins_build(url: str, number: int, building: bool) -> dict:
    return {
        "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
        "number": number,
        "building": building,
        "result": None if building else "ABORTED",
        "url": f"{url}/job/team/job/app/{number}/",
        "duration": 0,
        "timestamp": int(NOW * 1000),
    }


def github_repository(api_url: str) -> dict:
    # A server names its own API in ``url``; PyGithub builds the run's URL from it.
    return {
        "id": 1,
        "name": "r",
        "full_name": "o/r",
        "private": False,
        "url": f"{api_url}/repos/o/r",
        "owner": {"login": "o", "id": 2},
    }


def github_run(run_id: int, status: str) -> dict:
    return {
        "id": run_id,
        "name": "ci",
        "run_number": 7,
        "run_attempt": 1,
        "status": status,
        "conclusion": "cancelled" if status == "completed" else None,
        "html_url": f"https://github.com/o/r/actions/runs/{run_id}",
    }


class FakeEngineAPI:
    """Only what sweep() calls: a filtered listing and removals."""

    def __init__(self, summaries: list[dict]) -> None:
        self.summaries = summaries
        self.removed: list[str] = []

    def containers(self, all: bool, filters: dict) -> list[dict]:
        name, _, value = filters["label"].partition("=")
        return [s for s in self.summaries if s["Labels"].get(name) == value]

    def remove_container(self, container: str, force: bool, v: bool) -> None:
        self.removed.append(container)


def container(cid: str, job: CIContext, *, age: float = 3600, owner: Owner = ELSEWHERE) -> dict:
    started = datetime.datetime.fromtimestamp(NOW - age, datetime.timezone.utc)
    labels = names.container_labels(job, owner, started, keep=False)
    return {"Id": cid, "Names": [f"/{cid}"], "Created": int(NOW - age), "Labels": labels}


def jenkins_job(server_url: str, number: int) -> CIContext:
    return CIContext(
        Provider.JENKINS,
        job_name="team/app",
        build_id=str(number),
        build_url=f"{server_url}/job/team/job/app/{number}/",
    )


def github_job(run_id: int, server: str = "https://github.com") -> CIContext:
    return CIContext(
        Provider.GITHUB_ACTIONS,
        job_name="ci/test",
        build_id=str(run_id),
        build_url=f"{server}/o/r/actions/runs/{run_id}",
        repository="o/r",
    )


def sweep(api: FakeEngineAPI, env: dict, *, dry_run: bool = False) -> dict[str, janitor.Outcome]:
    statuses = janitor.BuildStatuses.from_env(env)
    try:
        outcomes = janitor.sweep(api, POLICY, statuses, dry_run=dry_run, now=NOW)
    finally:
        statuses.close()
    return {outcome.id: outcome for outcome in outcomes}


def test_jenkins_building_true_keeps_false_removes():
    routes: dict[str, object] = {"/crumbIssuer/api/json": CRUMB}
    with serve(routes) as jenkins:
        routes["/job/team/job/app/41/api/json?depth=0"] = jenkins_build(jenkins.url, 41, True)
        routes["/job/team/job/app/42/api/json?depth=0"] = jenkins_build(jenkins.url, 42, False)
        api = FakeEngineAPI(
            [
                container("a", jenkins_job(jenkins.url, 41)),
                container("b", jenkins_job(jenkins.url, 41)),
                container("c", jenkins_job(jenkins.url, 42)),
            ]
        )
        env = {
            "JENKINS_URL": jenkins.url + "/",
            "JENKINS_USER": "janitor",
            "JENKINS_TOKEN": "11aa22bb33cc",
        }
        outcomes = sweep(api, env)
    assert api.removed == ["c"]
    assert outcomes["a"].verdict.reason == "Jenkins says team/app #41 is running"
    assert outcomes["c"].verdict.reason == "Jenkins says team/app #42 is over"
    asked = [r for r in jenkins.requests if "/api/json?depth=0" in r.path]
    assert len(asked) == 2  # build 41 once for both of its containers
    expected = "Basic " + base64.b64encode(b"janitor:11aa22bb33cc").decode()
    assert all(r.headers.get("Authorization") == expected for r in asked)


def test_github_in_progress_keeps_completed_removes():
    routes = {
        "/repos/o/r/actions/runs/100": github_run(100, "in_progress"),
        "/repos/o/r/actions/runs/101": github_run(101, "completed"),
        "/repos/o/r/actions/runs/102": github_run(102, "queued"),
    }
    with serve(routes) as github:
        routes["/repos/o/r"] = github_repository(github.url)
        api = FakeEngineAPI(
            [
                container("a", github_job(100)),
                container("b", github_job(101)),
                container("c", github_job(102)),
            ]
        )
        env = {"GITHUB_API_URL": github.url, "GITHUB_TOKEN": "ghs_secret0123"}
        outcomes = sweep(api, env)
    assert api.removed == ["b"]
    assert outcomes["b"].verdict.reason == "GitHub says ci/test #101 is over"
    assert not outcomes["c"].verdict.remove
    assert github.paths().count("/repos/o/r") == 1  # the repository once, then each run
    assert all("ghs_secret0123" in r.headers.get("Authorization", "") for r in github.requests)


def test_unreachable_apis_fall_back_to_age_with_one_warning(caplog):
    caplog.set_level(logging.WARNING)
    down = closed_port_url()
    api = FakeEngineAPI(
        [
            container("young-1", jenkins_job(down, 1)),
            container("young-2", jenkins_job(down, 2)),
            container("old", jenkins_job(down, 3), age=2 * 86400),
            container("gh-old", github_job(5), age=3 * 86400),
            container("gh-young", github_job(6)),
        ]
    )
    outcomes = sweep(api, {"JENKINS_URL": down, "GITHUB_API_URL": closed_port_url()})
    assert sorted(api.removed) == ["gh-old", "old"]
    assert outcomes["young-1"].verdict.reason.startswith("nothing says whether")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # one per server: a server that is down is asked once
    assert any("Jenkins at" in w for w in warnings) and any("GitHub at" in w for w in warnings)


def test_a_build_jenkins_does_not_know_is_judged_by_age_and_others_still_asked(caplog):
    routes: dict[str, object] = {"/crumbIssuer/api/json": CRUMB}
    with serve(routes) as jenkins:
        routes["/job/team/job/app/8/api/json?depth=0"] = jenkins_build(jenkins.url, 8, False)
        api = FakeEngineAPI(
            [
                container("gone-build", jenkins_job(jenkins.url, 7)),
                container("over", jenkins_job(jenkins.url, 8)),
            ]
        )
        outcomes = sweep(api, {"JENKINS_URL": jenkins.url})
    assert api.removed == ["over"]
    assert not outcomes["gone-build"].verdict.remove
    assert "does not exist" in caplog.text


def test_builds_of_another_server_are_never_asked():
    with serve({}) as jenkins, serve({}) as github:
        api = FakeEngineAPI(
            [
                container("j", jenkins_job("https://other-jenkins.example.com", 3)),
                container("g", github_job(9, server="https://ghes.example.com")),
            ]
        )
        outcomes = sweep(api, {"JENKINS_URL": jenkins.url, "GITHUB_API_URL": github.url})
    assert jenkins.requests == [] and github.requests == [] and api.removed == []
    assert all(o.verdict.reason.startswith("nothing says") for o in outcomes.values())


def test_owners_on_this_host_need_no_api_call(tmp_path):
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    here = Host.here()
    with serve({}) as jenkins:
        api = FakeEngineAPI(
            [
                container("alive", jenkins_job(jenkins.url, 1), owner=Owner.this_process()),
                container("orphan", jenkins_job(jenkins.url, 1), owner=Owner(here, child.pid, 1)),
                container(
                    "fresh-orphan",
                    jenkins_job(jenkins.url, 1),
                    age=5,
                    owner=Owner(here, child.pid, 1),
                ),
            ]
        )
        outcomes = sweep(api, {"JENKINS_URL": jenkins.url})
    assert jenkins.requests == []
    assert api.removed == ["orphan"]
    assert "grace" in outcomes["fresh-orphan"].verdict.reason


@pytest.mark.parametrize("dry_run", [True, False])
def test_dry_run_removes_nothing(dry_run):
    api = FakeEngineAPI([container("old", jenkins_job("https://x.example.com", 1), age=9e5)])
    outcomes = sweep(api, {}, dry_run=dry_run)
    assert outcomes["old"].verdict.remove
    assert api.removed == ([] if dry_run else ["old"])
    assert outcomes["old"].removed is not dry_run
