"""The jenkins:// store against a loopback Jenkins (jenkins_front.py): each build a
workspace of its own, archived by publishing its folder as the job's next build.
Checked: the restore chain (own branch, target branch, default branch), the build
number pinned, an unchanged entry carried into the next build's artifacts, faults
(500s retried, an unreachable or silent Jenkins a miss with a warning in bounded
time, exit 3 with --strict), the token never shown, and bad URLs refused."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path

import pytest

from ci_integration import context, dircache
from ci_integration.cli import main
from ci_integration.context.model import CIContext, Provider
from ci_integration.store import open_store
from ci_integration.store.jenkins import DEFAULT_FOLDER, JenkinsStore
from ci_integration.store.jenkins_jobs import item_name, job_url_path, jobs_by_scope
from ci_integration.store.manifest import Manifest
from ci_integration.store.scoped import ScopedStore
from tests.store import jenkins_front
from tests.store.jenkins_backends import JENKINS_TOKEN, JENKINS_USER, jenkins_env
from tests.support.loopback_http import closed_port_url
from tests.unit.test_dircache import make_tree, snapshot


def open_jenkins_store(env: dict[str, str]) -> JenkinsStore:
    """The jenkins:// store as a job of ``env`` opens it."""
    store = open_store("jenkins://", env, functools.partial(context.detect, env))
    assert isinstance(store, JenkinsStore)
    return store


FEATURE = {"JOB_NAME": "proj/feature%2Fx", "BRANCH_NAME": "feature/x"}
MAIN = {"JOB_NAME": "proj/main", "BRANCH_NAME": "main", "BRANCH_IS_PRIMARY": "true"}
PULL_REQUEST = {"JOB_NAME": "proj/PR-7", "BRANCH_NAME": "PR-7", "CHANGE_ID": "7",
                "CHANGE_TARGET": "feature/x", "CHANGE_BRANCH": "fix/y"}  # fmt: skip


@pytest.fixture
def front():
    with jenkins_front.serve(JENKINS_USER, JENKINS_TOKEN) as served:
        yield served


@dataclasses.dataclass
class Run:
    code: int
    report: dict
    err: str


class Builds:
    """Builds of the project ``proj``: each in a fresh workspace, archived on request."""

    def __init__(self, root: Path, front: jenkins_front.Front, base_env: dict[str, str],
                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
        self.root, self.front, self.base_env, self.capsys = root, front, base_env, capsys
        self.count = 0

    def run(
        self, job: dict[str, str], action: str, key: str, *extra: str, content: str = "",
        url: str | None = None, env: dict[str, str] | None = None,
    ) -> tuple[Run, Path]:  # fmt: skip
        """One CLI call in a new workspace; with ``content``, the folder saved holds it."""
        self.count += 1
        workspace = self.root / f"build-{self.count}"
        workspace.mkdir()
        if content:
            make_tree(workspace / "data")
            (workspace / "data" / "who").write_text(content)
        variables = {**self.base_env, **jenkins_env(url or self.front.url, workspace),
                     **job, **(env or {})}  # fmt: skip
        return self.cli(workspace, variables, action, key, *extra), workspace

    def cli(self, workspace: Path, env: dict[str, str], action: str, key: str, *extra: str) -> Run:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(workspace)
            debug = ["--debug"] if "--debug" in extra else []
            options = [word for word in extra if word != "--debug"]
            code = main([*debug, "cache", action, "data", "--key", key, "--store", "jenkins://",
                         "--json", *options], env=env)  # fmt: skip
            out, err = self.capsys.readouterr()
        return Run(code, json.loads(out) if out.strip() else {}, err)

    def archive(self, job: dict[str, str], number: int, workspace: Path) -> None:
        self.front.publish(job["JOB_NAME"], number, workspace, DEFAULT_FOLDER)


@pytest.fixture
def builds(tmp_path, front, base_env, capsys) -> Builds:
    return Builds(tmp_path, front, base_env, capsys)


def test_a_pull_request_restores_its_own_then_its_target_then_the_default_branch(builds):
    run, main_build = builds.run(MAIN, "save", "deps-1", content="main")
    assert run.report["saved"] and run.report["scope"] == "branch-main"
    builds.archive(MAIN, 3, main_build)

    restored, _ = builds.run(PULL_REQUEST, "restore", "deps-1")
    assert (restored.report["cache_hit_kind"], restored.report["matched_scope"]) == (
        "exact",
        "branch-main",
    )
    # The target's job: the branch name escaped as Jenkins names the job, then in the URL.
    assert (
        "/job/proj/job/feature%252Fx/lastSuccessfulBuild/api/json?tree=number"
        in builds.front.paths()
    )

    run, feature_build = builds.run(FEATURE, "save", "deps-1", content="feature")
    assert run.report["scope"].startswith("branch-feature-x-")
    builds.archive(FEATURE, 8, feature_build)
    restored, pr_build = builds.run(PULL_REQUEST, "restore", "deps-1")
    assert restored.report["matched_scope"] == run.report["scope"]
    assert (pr_build / "data" / "who").read_text() == "feature"

    run, pr_build = builds.run(PULL_REQUEST, "save", "deps-1", content="pull request")
    builds.archive(PULL_REQUEST, 1, pr_build)
    restored, again = builds.run(PULL_REQUEST, "restore", "deps-1")
    assert restored.report["matched_scope"] == "pr-7"
    assert (again / "data" / "who").read_text() == "pull request"
    # Every request carried the login.
    assert all(authed for _, authed in builds.front.requests)


def test_a_restore_key_finds_the_newest_entry_of_a_build(builds):
    _, workspace = builds.run(MAIN, "save", "deps-a", content="older")
    time.sleep(0.05)
    for key, content in (("deps-b", "newer"), ("other-c", "other")):
        (workspace / "data" / "who").write_text(content)
        assert builds.cli(workspace, {**builds.base_env, **jenkins_env(builds.front.url, workspace),
                                      **MAIN}, "save", key).code == 0  # fmt: skip
    builds.archive(MAIN, 1, workspace)
    restored, target = builds.run(FEATURE, "restore", "deps-z", "--restore-key", "deps-")
    report = restored.report
    assert (report["cache_hit_kind"], report["matched_key"]) == ("partial", "deps-b")
    assert (target / "data" / "who").read_text() == "newer"


def test_an_unchanged_save_keeps_the_entry_in_the_next_builds_artifacts(builds):
    _, first = builds.run(FEATURE, "save", "deps-1", content="v1")
    builds.archive(FEATURE, 1, first)

    restored, second = builds.run(FEATURE, "restore", "deps-1")
    assert restored.report["matched_scope"].startswith("branch-feature-x-")
    env = {**builds.base_env, **jenkins_env(builds.front.url, second), **FEATURE}
    saved = builds.cli(second, env, "save", "deps-1")
    assert saved.report["unchanged"]
    # Only build 2 is left: the entry and every blob it names are in its artifacts.
    builds.front.builds.clear()
    builds.archive(FEATURE, 2, second)
    restored, third = builds.run(FEATURE, "restore", "deps-1")
    assert restored.report["cache_hit_kind"] == "exact"
    assert snapshot(third / "data") == snapshot(first / "data")


def test_the_build_number_is_pinned_for_the_whole_restore(builds, tmp_path):
    _, first = builds.run(MAIN, "save", "k", content="build 5")
    builds.archive(MAIN, 5, first)
    workspace, asked_before = tmp_path / "reader", len(builds.front.requests)
    store = open_jenkins_store(jenkins_env(builds.front.url, workspace, **FEATURE))
    scoped = ScopedStore(store, [store.own_scope, "branch-main"])
    assert scoped.read_entry("branch-main", "k", "directory") is not None
    # Build 6 finishes meanwhile, with nothing archived.
    (tmp_path / "empty").mkdir()
    builds.archive(MAIN, 6, tmp_path / "empty")
    result = dircache.restore(scoped, "k", [], ["data"], [workspace / "data"])
    assert result.hit == "exact" and (workspace / "data" / "who").read_text() == "build 5"
    paths = builds.front.paths()[asked_before:]
    assert paths.count("/job/proj/job/main/lastSuccessfulBuild/api/json?tree=number") == 1
    assert not [path for path in paths if "/main/6/" in path]


def test_a_save_writes_every_blob_its_entry_names_into_the_folder(builds, tmp_path):
    _, first = builds.run(MAIN, "save", "image:base", content="base")
    builds.archive(MAIN, 1, first)
    workspace = tmp_path / "feature"
    store = open_jenkins_store(jenkins_env(builds.front.url, workspace, **FEATURE))
    scoped = ScopedStore(store, [store.own_scope, "branch-main"])
    earlier = scoped.read_entry("branch-main", "image:base", "directory")
    # The same blobs under a new key in this job's scope, as an unchanged image is recorded.
    scoped.commit(dataclasses.replace(earlier, key="image:again", scope=store.own_scope))
    folder = workspace / DEFAULT_FOLDER
    for blob in earlier.blobs:
        hexdigest = blob.digest.removeprefix("sha256:")
        assert (folder / "blobs" / hexdigest[:2] / hexdigest).is_file()
    stored = Manifest.from_json(store.folder.get_entry(store.own_scope, "image:again"))
    assert stored.blobs == earlier.blobs


def test_transient_faults_are_retried(builds):
    _, first = builds.run(MAIN, "save", "k", content="main")
    builds.archive(MAIN, 1, first)
    builds.front.failures_left = 2
    restored, _ = builds.run(MAIN, "restore", "k", "--strict")
    assert restored.code == 0 and restored.report["cache_hit_kind"] == "exact"
    assert builds.front.failures_left == 0


@pytest.mark.parametrize("fault", ["refused", "silent", "http-500", "wrong-token"])
def test_jenkins_in_trouble_is_a_miss_with_a_warning_in_bounded_time(builds, fault):
    url, env = builds.front.url, {"CI_INTEGRATION_STORE_TIMEOUT": "0.5"}
    if fault == "refused":
        url = closed_port_url() + "/"
    elif fault == "silent":
        builds.front.delay_seconds = 3
    elif fault == "http-500":
        builds.front.failures_left = 1000
    else:
        env["JENKINS_TOKEN"] = "wrong-" + JENKINS_TOKEN
    started = time.monotonic()
    run, workspace = builds.run(FEATURE, "restore", "k", url=url, env=env)
    elapsed = time.monotonic() - started
    assert run.code == 0 and run.report["cache_hit_kind"] == "miss"
    assert "restored nothing for k: Jenkins at " in run.err
    assert elapsed < 6, elapsed
    strict = builds.cli(workspace, {**builds.base_env, **jenkins_env(url, workspace), **FEATURE,
                                    **env, "CI_INTEGRATION_STORE_TIMEOUT": "0.5"},
                        "restore", "k", "--strict", "--debug")  # fmt: skip
    assert strict.code == 3
    for output in (run.err, strict.err, json.dumps(run.report)):
        assert JENKINS_TOKEN not in output


def test_a_later_call_does_not_wait_for_a_jenkins_that_did_not_answer(front, tmp_path):
    front.delay_seconds = 3
    env = jenkins_env(front.url, tmp_path, **PULL_REQUEST, CI_INTEGRATION_STORE_TIMEOUT="0.3")
    store = open_jenkins_store(env)
    started = time.monotonic()
    for scope in store.jobs:
        with pytest.raises(OSError, match=r"no answer within|given up for this job"):
            store.get_entry(scope, "k")
    assert time.monotonic() - started < 2.5


def test_a_job_that_may_not_write_restores_and_says_it_does_not_save(builds):
    fork = {**PULL_REQUEST, "CHANGE_FORK": "someone"}
    _, main_build = builds.run(MAIN, "save", "k", content="main")
    builds.archive(MAIN, 1, main_build)
    restored, _ = builds.run(fork, "restore", "k")
    assert (restored.report["cache_hit_kind"], restored.report["matched_scope"]) == (
        "exact",
        "branch-main",
    )
    run, workspace = builds.run(fork, "save", "k", content="untrusted")
    assert run.code == 0 and run.report == {"saved": False, "key": "k", "reason": "read-only"}
    assert "this job is read-only (a pull request from a fork)" in run.err
    assert not (workspace / DEFAULT_FOLDER / "entries").exists() or not any(
        (workspace / DEFAULT_FOLDER / "entries").iterdir()
    )


def test_without_jenkins_url_only_the_folder_is_read(tmp_path, base_env, caplog):
    env = {**base_env, **jenkins_env("", tmp_path, **FEATURE)}
    del env["JENKINS_URL"]
    store = open_jenkins_store(env)
    assert store.client is None and store.get_entry("branch-main", "k") is None
    assert "restoring only from" in caplog.text


@pytest.mark.parametrize(
    "url",
    ["jenkins://ci.example.com/cache", "jenkins:///../up", "jenkins:///a/./b", "jenkins:///a b",
     "jenkins://?folder=x", "jenkins:cache", "jenkins:///x#y", "jenkins:///cache/*",
     "jenkins://user:secret@/cache"],
)  # fmt: skip
def test_bad_urls_are_usage_errors(url, tmp_path, base_env, capsys):
    env = {**base_env, **jenkins_env("http://127.0.0.1:9/", tmp_path, **MAIN)}
    code = main(["cache", "restore", "data", "--key", "k", "--store", url], env=env)
    err = capsys.readouterr().err
    assert code == 2
    assert "write jenkins:// or jenkins:///FOLDER" in err and "secret" not in err


def test_a_workspace_is_needed(tmp_path, base_env, capsys):
    env = {**base_env, **jenkins_env("http://127.0.0.1:9/", tmp_path, **MAIN)}
    del env["WORKSPACE"]
    assert main(["cache", "restore", "data", "--key", "k", "--store", "jenkins://"], env=env) == 2
    assert "no WORKSPACE" in capsys.readouterr().err


def test_jobs_of_the_chain():
    def context(**fields) -> CIContext:
        return CIContext(Provider.JENKINS, **fields)

    pull = context(branch="fix/y", base_branch="release/1.0", default_branch="main",
                   is_pull_request=True, pr_number=7)  # fmt: skip
    assert jobs_by_scope(pull, {"JOB_NAME": "org/proj/PR-7", "BRANCH_NAME": "PR-7"}) == {
        "pr-7": "org/proj/PR-7",
        pull.scope_chain[1]: "org/proj/release%2F1.0",
        "branch-main": "org/proj/main",
    }
    # A plain job (no BRANCH_NAME) reads its own builds only.
    plain = context(branch="main", default_branch="main")
    assert jobs_by_scope(plain, {"JOB_NAME": "folder/app"}) == {"branch-main": "folder/app"}
    assert jobs_by_scope(plain, {}) == {}
    assert item_name("a/b#c%d?e[f]g\\h") == "a%2Fb%23c%25d%3Fe%5Bf%5Dg%5Ch"
    assert [item_name(n) for n in ("", ".", "..")] == ["%00", "%2E", "%2E."]
    assert job_url_path("org/proj/feature%2Fx") == "job/org/job/proj/job/feature%252Fx/"
