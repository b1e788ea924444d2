"""``ci-integration run`` arguments turned into a container spec and the Engine API's
create arguments, with no engine: the uid mapping, the workspace, the killer variables."""

from __future__ import annotations

import argparse
import functools
import os

import docker
import docker.types
import pytest

from ci_integration import context
from ci_integration.commands import run as run_command
from ci_integration.containers import labels as names
from ci_integration.containers.spec import create_arguments, device_requests, unique_name
from ci_integration.errors import UsageError
from ci_integration.job import Job

# A client that never connects: create_host_config only needs the API version.
OFFLINE_API = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_command.configure(parser)
    return parser.parse_args(argv)


@pytest.fixture
def workspace(tmp_path):
    (tmp_path / "sub").mkdir()
    return tmp_path


def spec_of(argv, env, cwd, uid=1000, gid=1001):
    job = Job(env, cwd, functools.partial(context.detect, env, cwd))
    return run_command.container_spec(parse(*argv), job, uid=uid, gid=gid)


def test_defaults_map_the_callers_uid_and_mount_the_workspace(workspace):
    spec = spec_of(["img:1", "make", "-j4"], {"WORKSPACE": str(workspace)}, workspace / "sub")
    assert spec.user == "1000:1001"
    assert (spec.workspace, spec.workdir) == (str(workspace), str(workspace / "sub"))
    assert spec.command == ["make", "-j4"] and spec.init and not spec.keep
    arguments = create_arguments(OFFLINE_API, spec)
    host = arguments["host_config"]
    assert host["Binds"][0] == f"{workspace}:{workspace}:rw"
    assert host["AutoRemove"] is True and host["Init"] is True
    assert arguments["user"] == "1000:1001" and arguments["working_dir"] == str(workspace / "sub")
    assert names.is_ours(arguments["labels"])


def test_a_folder_outside_the_workspace_works_in_the_workspace(workspace, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    spec = spec_of(["img"], {"GITHUB_WORKSPACE": str(workspace)}, elsewhere)
    assert spec.workdir == str(workspace) and spec.command == []


def test_double_dash_and_options_after_the_image_belong_to_the_command(workspace):
    spec = spec_of(["-e", "A=1", "img", "--", "sh", "-e", "-c", "true"], {}, workspace)
    assert spec.command == ["sh", "-e", "-c", "true"] and spec.env == {"A": "1"}


def test_env_options_and_killer_variables(workspace):
    env = {"JENKINS_NODE_COOKIE": "c00k1e", "BUILD_ID": "41", "FROM_HERE": "h", "OTHER": "o"}
    spec = spec_of(
        [
            "-e",
            "A=1",
            "-e",
            "FROM_HERE",
            "-e",
            "MISSING",
            "-e",
            "JENKINS_NODE_COOKIE=forged",
            "img",
        ],
        env,
        workspace,
    )
    assert spec.env == {
        "A": "1",
        "FROM_HERE": "h",
        "JENKINS_NODE_COOKIE": "c00k1e",
        "BUILD_ID": "41",
    }
    arguments = create_arguments(OFFLINE_API, spec)
    assert "JENKINS_NODE_COOKIE=c00k1e" in arguments["environment"]


def test_passthrough_options(workspace):
    spec = spec_of(
        [
            "--network",
            "none",
            "--memory",
            "512m",
            "--cpus",
            "1.5",
            "--shm-size",
            "1g",
            "--gpus",
            "all",
            "-v",
            "cache:/cache",
            "-v",
            "/etc/hosts:/h:ro",
            "--keep",
            "--no-init",
            "--user",
            "0",
            "img",
        ],
        {},
        workspace,
    )
    host = create_arguments(OFFLINE_API, spec)["host_config"]
    assert host["NetworkMode"] == "none" and host["Memory"] == 512 * 1024**2
    assert host["NanoCpus"] == 1_500_000_000 and host["ShmSize"] == 1024**3
    assert host["Binds"][1:] == ["cache:/cache", "/etc/hosts:/h:ro"]
    assert host["DeviceRequests"][0]["Count"] == -1
    assert "AutoRemove" not in host and "Init" not in host
    assert spec.user == "0" and names.is_kept(spec.labels)


def test_userns_remapping_is_undone_for_our_containers(workspace):
    import dataclasses

    spec = dataclasses.replace(spec_of(["img"], {}, workspace), userns_host=True)
    assert create_arguments(OFFLINE_API, spec)["host_config"]["UsernsMode"] == "host"


@pytest.mark.parametrize(
    "gpus,expected",
    [
        ("all", {"Count": -1}),
        ("2", {"Count": 2}),
        ("device=0,GPU-3a", {"DeviceIDs": ["0", "GPU-3a"]}),
    ],
)
def test_gpus_as_docker_reads_them(gpus, expected):
    request = device_requests(gpus)[0]
    assert request["Capabilities"] == [["gpu"]]
    assert {key: request[key] for key in expected} == expected


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--gpus", "some", "img"], "bad --gpus"),
        (["-v", "nocolon", "img"], "bad -v"),
        (["-v", "a:relative", "img"], "bad -v"),
        (["-e", "=x", "img"], "bad -e"),
        (["--stop-timeout", "-1", "img"], "--stop-timeout"),
        (["--cpus", "0", "img"], "--cpus"),
        (["--workspace", "/nonexistent/ws", "img"], "not a folder"),
    ],
)
def test_bad_arguments_are_usage_errors(workspace, argv, message):
    with pytest.raises(UsageError, match=message):
        spec = spec_of(argv, {}, workspace)
        create_arguments(OFFLINE_API, spec)


def test_bad_sizes_are_usage_errors(workspace):
    with pytest.raises(UsageError, match="bad container option"):
        create_arguments(OFFLINE_API, spec_of(["--memory", "lots", "img"], {}, workspace))


def test_names_are_unique_and_valid():
    first, second = unique_name("folder/app main", "41"), unique_name("folder/app main", "41")
    assert first != second and first.startswith("ci-integration-folder-app-main-41-")
    assert unique_name(None, None).startswith("ci-integration-")
    assert len(unique_name("x" * 500)) < 90


def test_another_user_is_warned_about_in_a_ci(workspace, caplog):
    env = {"JENKINS_URL": "https://ci.example.com/"}
    spec_of(["--user", "0", "img"], env, workspace, uid=1000)
    assert "process-tree killer cannot find" in caplog.text
    caplog.clear()
    spec_of(["--user", "1000:50", "img"], env, workspace, uid=1000)
    spec_of(["--user", "0", "img"], {}, workspace, uid=1000)
    assert not caplog.text


def test_no_root_owned_files_is_the_default_for_any_caller(workspace):
    assert spec_of(["img"], {}, workspace, uid=os.getuid(), gid=os.getgid()).user == (
        f"{os.getuid()}:{os.getgid()}"
    )
