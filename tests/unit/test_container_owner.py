"""Owners and labels: who started a container, and whether that process still runs."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

from ci_integration.containers import labels as names
from ci_integration.containers.killer_env import KILLER_VARIABLES, container_env, killer_env
from ci_integration.containers.owner import Host, Owner, is_running, start_ticks
from ci_integration.context import CIContext, Provider


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_this_process_is_running():
    assert is_running(Owner.this_process(), Host.here()) is True


def test_an_exited_process_is_gone():
    assert is_running(Owner(Host.here(), dead_pid(), None), Host.here()) is False


def test_a_reused_pid_is_not_the_owner():
    me = Owner.this_process()
    assert me.start_ticks is not None
    assert is_running(Owner(me.host, me.pid, me.start_ticks + 1), Host.here()) is False


def test_a_zombie_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
    try:
        assert start_ticks(child.pid) is None
    finally:
        child.wait()


def test_another_host_or_pid_namespace_cannot_tell():
    here = Host.here()
    me = Owner.this_process()
    assert is_running(Owner(Host("elsewhere", here.pid_namespace), me.pid, None), here) is None
    assert is_running(Owner(Host(here.name, "pid:[1]"), me.pid, None), here) is None
    assert is_running(names.owner_of({}), here) is None


def test_labels_name_the_owner_and_the_build():
    job = CIContext(
        Provider.GITHUB_ACTIONS,
        job_name="ci/test",
        build_id="9001",
        build_url="https://github.com/o/r/actions/runs/9001",
        repository="o/r",
    )
    me = Owner.this_process()
    started = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    labels = names.container_labels(job, me, started, keep=False)
    assert names.is_ours(labels) and not names.is_kept(labels)
    assert labels[names.STARTED] == "2024-05-01T12:00:00+00:00"
    assert labels[names.BUILD] == "9001" and labels[names.PROVIDER] == "github-actions"
    assert names.owner_of(labels) == me
    assert all(name.startswith("io.ci-integration.") for name in labels)
    build = names.Build.of(labels)
    assert (build.repository, build.number, build.describe()) == ("o/r", "9001", "ci/test #9001")


def test_killer_variables_are_copied_exactly_and_win():
    env = {name: f"value of {name}" for name in KILLER_VARIABLES}
    env["BUILD_TAG"] = ""  # empty is a value too: the killer compares it
    env["UNRELATED"] = "x"
    assert killer_env(env) == {name: env[name] for name in KILLER_VARIABLES}
    merged = container_env({"JENKINS_NODE_COOKIE": "forged", "MINE": "1"}, env)
    assert merged["JENKINS_NODE_COOKIE"] == "value of JENKINS_NODE_COOKIE"
    assert merged["MINE"] == "1" and "UNRELATED" not in merged


def test_killer_variables_cover_every_jenkins_kill_set():
    # Pipeline sh step, end of node {}, freestyle build (Run.getCharacteristicEnvVars).
    assert {"JENKINS_SERVER_COOKIE", "JENKINS_NODE_COOKIE"} <= set(KILLER_VARIABLES)
    freestyle = {
        "JENKINS_SERVER_COOKIE",
        "HUDSON_SERVER_COOKIE",
        "JOB_NAME",
        "JOB_BASE_NAME",
        "BUILD_NUMBER",
        "BUILD_ID",
        "BUILD_TAG",
    }
    assert freestyle <= set(KILLER_VARIABLES)
    assert {"GITHUB_RUN_ID", "RUNNER_TRACKING_ID"} <= set(KILLER_VARIABLES)
