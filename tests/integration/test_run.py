"""``ci-integration run`` and ``cleanup`` on every engine of the matrix, driven as a CI
drives them: real processes, real signals, Jenkins' process-tree killer reading /proc,
SIGKILL."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

import docker.errors
import pytest

from ci_integration.containers import labels as names
from tests.support import base_images, engine_proxy, process_tree
from tests.support.cli_process import CLI

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
IGNORES_SIGNALS = 'trap "" TERM INT HUP; echo started; while :; do sleep 0.1; done'
AGENT_UID = 65534  # nobody: a CI agent that is not root


def owned_by(docker_client, pid: int) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"{names.OWNER_PID}={pid}"})


def wait_until(predicate, timeout: float, step: float = 0.05) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"not true within {timeout} s")


@pytest.fixture
def workspace():
    """A workspace any user can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="ci-integration-ws-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def docker_client(engine):
    """The engine of this run of the test (tests/integration/conftest.py)."""
    return engine.client


@pytest.fixture
def busybox_image(engine) -> str:
    return base_images.busybox_image(engine.client)


@pytest.fixture
def job_env(base_env, workspace, engine) -> dict[str, str]:
    return {
        **base_env,
        **engine.env,
        "HOME": str(workspace),
        "PYTHONDONTWRITEBYTECODE": "1",
        "CI_INTEGRATION_PROVIDER": "local",
    }


@pytest.fixture
def run_cli(busybox_image, job_env, workspace, docker_client):
    """Starts ``ci-integration run`` processes; whatever a test leaves is killed and its
    containers removed, so one failure does not leak into the next test."""
    started: list[CLI] = []

    def start(*argv: str, env: dict | None = None, as_agent: bool = False) -> CLI:
        env = env or job_env
        popen: dict = {}
        if as_agent:
            python, extra_env, popen = agent_user(workspace, env["DOCKER_HOST"])
            env, popen["python"] = {**env, **extra_env}, python
        cli = CLI(["run", *argv[:-1], busybox_image, "sh", "-c", argv[-1]], env, workspace, **popen)
        started.append(cli)
        return cli

    yield start
    for cli in started:
        cli.kill()
        for container in owned_by(docker_client, cli.proc.pid):
            with contextlib.suppress(docker.errors.APIError):  # 404, 409: going already
                container.remove(force=True)


def agent_user(workspace: Path, docker_host: str) -> tuple[str, dict[str, str], dict]:
    """(python, extra env, Popen arguments) to run as a non-root CI agent in the docker
    group of the engine at ``docker_host``; as ourselves when we are not root."""
    if os.getuid() != 0:
        return sys.executable, {}, {}
    docker_gid = os.stat(engine_proxy.engine_socket(docker_host)).st_gid
    os.chown(workspace, AGENT_UID, AGENT_UID)
    python, extra_env = python_for_anyone()
    return python, extra_env, {"user": AGENT_UID, "group": AGENT_UID, "extra_groups": [docker_gid]}


def python_for_anyone() -> tuple[str, dict[str, str]]:
    """An interpreter another user may run, seeing this environment's packages: ours, or
    (when ours lives in a private folder, as pyenv's under /root) the system's same
    version with our site-packages on PYTHONPATH."""
    if _anyone_may_run(sys.executable):
        return sys.executable, {}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/bin:/usr/local/bin")
    if system is None or not _anyone_may_run(system):
        pytest.skip(f"no {version} that another user may run")
    packages = sysconfig.get_paths()["purelib"]
    return system, {"PYTHONPATH": os.pathsep.join([packages, str(ROOT)])}


def _anyone_may_run(program: str) -> bool:
    path = Path(os.path.realpath(program))
    folders_open = all(folder.stat().st_mode & 0o001 for folder in path.parents)
    return folders_open and bool(path.stat().st_mode & 0o001)


def test_output_streams_live_and_the_exit_code_passes_through(run_cli, docker_client):
    cli = run_cli("echo to-stdout; echo to-stderr >&2; echo started; sleep 1; exit 7")
    cli.wait_for("started", timeout=30)
    assert owned_by(docker_client, cli.proc.pid)  # printed while the container runs
    assert cli.finish() == 7
    assert "to-stdout" in cli.stdout and "to-stderr" in cli.stderr
    assert owned_by(docker_client, cli.proc.pid) == []


def test_workspace_files_belong_to_the_caller(run_cli, workspace):
    uid = AGENT_UID if os.getuid() == 0 else os.getuid()
    cli = run_cli("id -u; touch made-in-container; pwd", as_agent=True)
    assert cli.finish() == 0, cli.stderr
    assert cli.stdout[0] == str(uid) and cli.stdout[-1] == str(workspace)
    assert (workspace / "made-in-container").stat().st_uid == uid


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_removes_the_container(run_cli, docker_client, signum):
    cli = run_cli("--stop-timeout", "1", IGNORES_SIGNALS)
    cli.wait_for("started")
    assert len(owned_by(docker_client, cli.proc.pid)) == 1
    sent = time.monotonic()
    cli.proc.send_signal(signum)
    assert cli.finish() == 128 + signum
    assert time.monotonic() - sent < 5  # 1 s grace, then SIGKILL: within Jenkins' window
    assert owned_by(docker_client, cli.proc.pid) == []
    assert f"interrupted by {signal.Signals(signum).name}" in cli.stderr[-1]


def test_a_second_signal_during_the_stop_does_not_abort_it(run_cli, docker_client):
    cli = run_cli("--stop-timeout", "2", IGNORES_SIGNALS)
    cli.wait_for("started")
    cli.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the engine is now stopping the container
    cli.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    cli.proc.send_signal(signal.SIGTERM)
    assert cli.finish() == 143
    assert owned_by(docker_client, cli.proc.pid) == []


# Every request of the start-up, in order: docker-py's version check, the ping, the
# image's inspection, the engine's info (user namespaces), then the container's own.
START_UP_STEPS = (b"/version", b"/_ping", b"/json", b"/info", b"/containers/create",
                  b"/attach", b"/wait", b"/start")  # fmt: skip


@pytest.mark.parametrize("step", START_UP_STEPS)
def test_a_signal_during_each_start_up_step_leaves_nothing(run_cli, docker_client, job_env, step):
    """The engine is made to hold one request of the start-up for a second, and the
    signal comes while the CLI waits on it: whatever exists by then is removed."""
    with engine_proxy.holding(step, seconds=1.0, docker_host=job_env["DOCKER_HOST"]) as proxy:
        cli = run_cli(
            "--stop-timeout",
            "1",
            IGNORES_SIGNALS,
            env={**job_env, "DOCKER_HOST": proxy.docker_host},
        )
        assert proxy.reached.wait(timeout=30), cli.stderr
        cli.proc.send_signal(signal.SIGTERM)
        assert cli.finish() == 143, cli.stderr
    assert "interrupted by SIGTERM" in cli.stderr[-1]
    assert owned_by(docker_client, cli.proc.pid) == []
    if step != b"/start":  # a start already asked for goes through, then is stopped
        assert "started" not in cli.stdout


@pytest.mark.parametrize("delay", [0.0, 0.2])
def test_a_signal_while_python_starts_leaves_nothing(run_cli, docker_client, delay):
    cli = run_cli("--stop-timeout", "1", IGNORES_SIGNALS)
    time.sleep(delay)
    cli.proc.send_signal(signal.SIGTERM)
    # -15: still importing, before any handler (and before any container); 143: ours.
    assert cli.finish() in (143, -signal.SIGTERM)
    assert owned_by(docker_client, cli.proc.pid) == []


def test_keep_leaves_the_stopped_container_with_labels_and_killer_env(
    run_cli, docker_client, job_env
):
    env = {
        **job_env,
        "CI_INTEGRATION_PROVIDER": "github-actions",
        "GITHUB_ACTIONS": "true",
        "GITHUB_RUN_ID": "8123",
        "GITHUB_REPOSITORY": "o/r",
        "RUNNER_TRACKING_ID": "github_x",
        "GITHUB_WORKFLOW": "ci",
        "GITHUB_JOB": "test",
        "JENKINS_NODE_COOKIE": "c00k1e",
    }
    cli = run_cli("--keep", "-e", "MINE=1", "exit 3", env=env)
    assert cli.finish() == 3
    [container] = owned_by(docker_client, cli.proc.pid)
    try:
        assert container.status == "exited"
        labels = container.labels
        assert names.is_ours(labels) and names.is_kept(labels)
        assert labels[names.BUILD] == "8123" and labels[names.PROVIDER] == "github-actions"
        assert labels[names.BUILD_URL] == "https://github.com/o/r/actions/runs/8123"
        assert labels[names.JOB] == "ci/test" and labels[names.REPOSITORY] == "o/r"
        assert {names.HOST, names.OWNER_PID, names.OWNER_START, names.STARTED} <= set(labels)
        container_env = set(container.attrs["Config"]["Env"])
        assert {
            "GITHUB_RUN_ID=8123",
            "RUNNER_TRACKING_ID=github_x",
            "JENKINS_NODE_COOKIE=c00k1e",
            "MINE=1",
        } <= container_env
    finally:
        container.remove(force=True)


def test_errors_are_one_line_with_their_exit_code(job_env, workspace, busybox_image):
    missing = CLI(["run", "127.0.0.1:1/ci-integration-test/missing:1", "true"], job_env, workspace)
    assert missing.finish() == 2
    assert missing.stderr[-1].startswith("ci-integration: error: the image")
    # docker-init runs the command, and reports a missing one as shells do.
    no_command = CLI(["run", busybox_image, "no-such-command"], job_env, workspace)
    assert no_command.finish() == 127
    assert "no-such-command" in no_command.stderr[-1]
    no_init = CLI(["run", "--no-init", busybox_image, "no-such-command"], job_env, workspace)
    assert no_init.finish() == 127
    assert no_init.stderr[-1].startswith("ci-integration: error: command not found")
    no_engine = CLI(
        ["run", busybox_image, "true"],
        {**job_env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
        workspace,
    )
    assert no_engine.finish() == 4
    assert "no Docker engine answers" in no_engine.stderr[-1] and len(no_engine.stderr) == 1
    bad = CLI(["run", "--memory", "lots", busybox_image, "true"], job_env, workspace)
    assert bad.finish() == 2 and "bad container option" in bad.stderr[-1]


def test_sigkill_leaves_an_orphan_that_cleanup_removes(
    run_cli, docker_client, busybox_image, job_env, workspace
):
    cli = run_cli("echo started; sleep 300")
    cli.wait_for("started")
    cli.proc.kill()
    cli.finish()
    [orphan] = owned_by(docker_client, cli.proc.pid)
    assert orphan.status == "running"  # killed outright, nothing of ours ran
    bystander = docker_client.containers.create(
        busybox_image, ["sleep", "300"], labels={"purpose": "not ours"}
    )
    try:
        dry = CLI(["cleanup", "--grace", "0", "--dry-run", "--json"], job_env, workspace)
        assert dry.finish() == 0, dry.stderr
        planned = {c["id"]: c for c in json.loads("\n".join(dry.stdout))["containers"]}
        assert planned[orphan.id]["remove"] and not planned[orphan.id]["removed"]
        assert bystander.id not in planned
        assert owned_by(docker_client, cli.proc.pid)

        sweep = CLI(["cleanup", "--grace", "0", "--json"], job_env, workspace)
        assert sweep.finish() == 0, sweep.stderr
        done = {c["id"]: c for c in json.loads("\n".join(sweep.stdout))["containers"]}
        assert done[orphan.id]["removed"]
        assert "is gone" in done[orphan.id]["reason"]
        assert owned_by(docker_client, cli.proc.pid) == []
        bystander.reload()  # still there, untouched
    finally:
        bystander.remove(force=True)


def jenkins_env(job_env: dict[str, str], cookie_name: str) -> tuple[dict[str, str], dict]:
    cookie = uuid.uuid4().hex
    env = {
        **job_env,
        "CI_INTEGRATION_PROVIDER": "jenkins",
        "JENKINS_URL": "http://127.0.0.1:1/",
        "JOB_NAME": "team/app",
        "BUILD_NUMBER": "41",
        "BUILD_ID": "41",
        cookie_name: cookie,
    }
    return env, {cookie_name: cookie}


def in_other_pid_namespace(pid: int) -> bool:
    return os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")


def test_jenkins_killer_finds_the_container_processes_by_node_cookie(
    run_cli, docker_client, job_env
):
    env, model = jenkins_env(job_env, "JENKINS_NODE_COOKIE")
    cli = run_cli("echo started; sleep 300", env=env)
    cli.wait_for("started")
    found = process_tree.matching(model, sorted(process_tree.snapshot()))
    inside = [pid for pid in found if in_other_pid_namespace(pid)]
    assert cli.proc.pid in found and len(inside) >= 2  # docker-init and the command
    # Only the container's processes: the container must end by their death alone.
    killed = process_tree.kill_all(model, spare=[cli.proc.pid])
    assert killed and set(killed) <= set(inside)  # docker-init may go on its own first
    assert cli.finish(timeout=30) == 143  # the command died of SIGTERM; the CLI says so
    assert not any(os.path.exists(f"/proc/{pid}") for pid in inside)
    assert owned_by(docker_client, cli.proc.pid) == []


def test_jenkins_killer_as_the_agent_user_within_its_window(
    run_cli, docker_client, job_env, workspace
):
    """A Pipeline ``sh`` step aborted on a non-root agent: the killer (the agent's user)
    finds the CLI and the container's processes by JENKINS_SERVER_COOKIE, and the
    container is gone before Jenkins' 5 s would run out, though its command ignores
    SIGTERM."""
    if os.getuid() != 0:
        pytest.skip("needs root to act as another (agent) user")
    env, model = jenkins_env(job_env, "JENKINS_SERVER_COOKIE")
    cli = run_cli(IGNORES_SIGNALS, env=env, as_agent=True)
    cli.wait_for("started")
    python, extra_env = python_for_anyone()
    # The window opens when the killer's signals go out, not when its interpreter starts
    # (which, on a loaded machine, is most of the wait). Both clocks are the system's
    # CLOCK_MONOTONIC.
    killer = [
        python,
        "-c",
        "import json, sys, time; from tests.support import process_tree as t; "
        "model = json.loads(sys.argv[1]); "
        "found = {p: t.pid_namespace(p) for p in t.matching(model, sorted(t.snapshot()))}; "
        "sent = time.monotonic(); "
        "print(json.dumps([found, t.kill_all(model), sent]))",
        json.dumps(model),
    ]
    result = subprocess.run(
        killer,
        cwd=ROOT,
        user=AGENT_UID,
        group=AGENT_UID,
        timeout=60,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **extra_env},
    )
    assert result.returncode == 0, result.stderr
    found, killed, sent = json.loads(result.stdout)
    ours = os.readlink("/proc/self/ns/pid")
    assert found.pop(str(cli.proc.pid)) == ours  # the CLI: matched, and killed
    assert len(found) >= 2 and all(namespace != ours for namespace in found.values())
    assert cli.proc.pid in killed
    assert cli.finish(timeout=30) == 143
    gone_after = time.monotonic() - sent
    assert owned_by(docker_client, cli.proc.pid) == []
    assert gone_after < 5.0, f"gone after {gone_after:.1f} s"
