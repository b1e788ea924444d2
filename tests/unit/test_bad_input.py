"""Wrong invocations: each gets one line that says what to fix, and its documented
exit code (README, "Exit codes"); none needs a working engine or store to say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci_integration.cli import main

DOCKERFILE = "FROM scratch AS base\nCOPY a /a\nFROM base AS app\n"
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}

CASES = [
    # (arguments, extra environment, exit code, what the one line says)
    ([], {}, 2, "the following arguments are required: COMMAND"),
    (["frobnicate"], {}, 2, "invalid choice: 'frobnicate'"),
    (["--no-such-flag", "context"], {}, 2, "unrecognized arguments: --no-such-flag"),
    (["context", "--json", "--shell"], {}, 2, "not allowed with argument --json"),
    (["context", "--github-output"], {}, 2, "--github-output needs GITHUB_OUTPUT"),
    (["cache"], {}, 2, "the following arguments are required: ACTION"),
    (["cache", "save", "data"], {}, 2, "the following arguments are required: --key"),
    (["cache", "save", "--key", "k"], {}, 2, "the following arguments are required: PATH"),
    (["cache", "save", "data", "--key", "a b"], {}, 2, "invalid cache key 'a b'"),
    (["cache", "save", "data", "--key", ""], {}, 2, "the cache key is empty"),
    (["cache", "save", "data", "--key", "k" * 600], {}, 2, "at most 512 allowed"),
    (["cache", "save", "data", "--key", "/etc/k"], {}, 2, "invalid cache key '/etc/k'"),
    (["cache", "restore", "data", "--key", "k-{nope}"], {}, 2, "unknown placeholder {nope}"),
    (["cache", "restore", "data", "--key", "k-{hash:}"], {}, 2, "needs globs"),
    (["cache", "restore", "data", "--key", "k-{os"], {}, 2, "unbalanced braces"),
    (
        ["cache", "restore", "data", "--key", "k", "--restore-key", "a b"],
        {},
        2,
        "invalid cache key 'a b'",
    ),
    (
        ["cache", "save", "data", "--key", "k", "--store", "ftp://host/x"],
        {},
        2,
        "unsupported store URL scheme 'ftp'",
    ),
    (
        ["cache", "save", "data", "--key", "k", "--store", "file://host/x"],
        {},
        2,
        "write file:///absolute/path",
    ),
    (
        ["cache", "save", "data", "--key", "k", "--store", "s3://me:pw@bucket/x"],
        {},
        2,
        "credentials in AWS_*",
    ),
    (["cache", "save", "data", "--key", "k", "--store", "s3:///x"], {}, 2, "no bucket name"),
    (["cache", "prune", "--max-size", "lots"], {}, 2, "'lots' is not a size"),
    (["cache", "prune", "--max-age", "soon"], {}, 2, "'soon' is not a duration"),
    (["cache", "prune", "--keep-last", "0"], {}, 2, "'0' is not a whole number of 1 or more"),
    (["build", "."], {}, 2, "the following arguments are required: -t/--tag"),
    (["build", "missing-folder", "-t", "app:1"], {}, 2, "build context missing-folder is not"),
    (["build", "empty", "-t", "app:1"], {}, 2, "Dockerfile not found"),
    (["build", "project", "-t", "app:1", "--target", "nope"], {}, 2, "unknown stage 'nope'"),
    (["build", "project", "-t", "app:1", "--build-arg", "=x"], {}, 2, "bad --build-arg '=x'"),
    (
        ["build", "project", "-t", "app:1", "--export", "app:relative=out"],
        {},
        2,
        "write STAGE:/absolute/path/in/image=HOST_DIR",
    ),
    (["build", "project", "-t", "app:1", "--builder", "magic"], {}, 2, "invalid choice: 'magic'"),
    (["build", "broken", "-t", "app:1"], {}, 2, "line 1: RUN before the first FROM"),
    (["build", "project", "-t", "app:1"], NO_ENGINE, 4, "no Docker engine answers"),
    (["image", "save"], {}, 2, "the following arguments are required: IMAGE"),
    (["image", "load", "app:1", "--key", "a b"], {}, 2, "invalid cache key 'a b'"),
    (["run"], {}, 2, "the following arguments are required: IMAGE"),
    (["run", "--stop-timeout", "-1", "img"], {}, 2, "--stop-timeout must be 0 or more"),
    (["run", "--cpus", "0", "img"], {}, 2, "--cpus must be more than 0"),
    (["run", "--workspace", "missing-folder", "img"], {}, 2, "is not a folder"),
    (["run", "-e", "=x", "img"], {}, 2, "bad -e '=x'"),
    (["run", "img"], NO_ENGINE, 4, "no Docker engine answers"),
    (["cleanup", "--max-age", "soon"], {}, 2, "soon"),
]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "Dockerfile").write_text(DOCKERFILE)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "Dockerfile").write_text("RUN echo before any FROM\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("argv", "extra", "code", "message"), CASES,
                         ids=[" ".join(case[0])[:60] or "nothing" for case in CASES])  # fmt: skip
def test_bad_input(argv, extra, code, message, workspace, base_env, capsys):
    env = {**base_env, "JENKINS_URL": "https://ci.example.com/", "BRANCH_NAME": "main",
           "CI_INTEGRATION_CACHE_DIR": str(workspace / "store"), **extra}  # fmt: skip
    assert main(argv, env=env) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert "Traceback" not in captured.err


def store_files(store: Path) -> dict[str, bytes]:
    return {path.relative_to(store).as_posix(): path.read_bytes()
            for path in sorted(store.rglob("*")) if path.is_file()}  # fmt: skip


def test_run_ccache_without_an_engine_leaves_the_stored_entry_as_it_was(
    workspace, base_env, capsys
):
    env = {**base_env, "JENKINS_URL": "https://ci.example.com/", "BRANCH_NAME": "main",
           "CI_INTEGRATION_CACHE_DIR": str(workspace / "store")}  # fmt: skip
    ccache = workspace / "ccache"
    (ccache / "a").mkdir(parents=True)
    (ccache / "a" / "object.o").write_bytes(b"compiled " * 1000)
    (ccache / "ccache.conf").write_text("max_size = 1G\n")
    assert main(["cache", "save", "--key", "ccache-test", "ccache"], env=env) == 0
    before = store_files(workspace / "store")

    import shutil

    shutil.rmtree(ccache)  # a new job's workspace
    argv = ["run", "--ccache", "ccache", "--ccache-key", "ccache-test", "img", "true"]
    assert main(argv, env={**env, **NO_ENGINE}) == 4
    captured = capsys.readouterr()
    assert "ccache saved" not in captured.err
    assert "no Docker engine answers" in captured.err.strip().splitlines()[-1]
    assert (ccache / "a" / "object.o").exists()  # it was restored, then left alone
    after = store_files(workspace / "store")
    assert {name: after.get(name) for name in before} == before


def test_a_ccache_folder_left_empty_is_not_saved_over_the_stored_entry(workspace, base_env):
    """The container ran but left the folder empty (its compiles wiped it, or never
    used it): the stored entry stays."""
    import functools

    from ci_integration import context
    from ci_integration.containers.ccache_mount import CcacheFolder
    from ci_integration.job import Job

    env = {**base_env, "JENKINS_URL": "https://ci.example.com/", "BRANCH_NAME": "main",
           "CI_INTEGRATION_CACHE_DIR": str(workspace / "store")}  # fmt: skip
    ccache = workspace / "ccache"
    ccache.mkdir()
    (ccache / "stats").write_text("1\n")
    assert main(["cache", "save", "--key", "ccache-test", "ccache"], env=env) == 0
    before = store_files(workspace / "store")

    store = Job(env, workspace, functools.partial(context.detect, env)).store(None)
    folder = CcacheFolder(ccache, "ccache-test", store, strict=True)
    assert folder.restore() == "exact"
    (ccache / "stats").unlink()
    folder.finish()
    after = store_files(workspace / "store")
    assert {name: after.get(name) for name in before} == before
    assert main(["cache", "restore", "--key", "ccache-test", "ccache"], env=env) == 0
    assert (ccache / "stats").read_text() == "1\n"


@pytest.mark.parametrize("where", ["missing-folder/out", "a-folder"])
def test_an_output_file_that_cannot_be_written_is_one_line(where, workspace, base_env, capsys):
    (workspace / "a-folder").mkdir()
    target = workspace / where
    env = {**base_env, "CI_INTEGRATION_CACHE_DIR": str(workspace / "store"),
           "GITHUB_OUTPUT": str(target)}  # fmt: skip
    (workspace / "data" / "f").write_text("x")
    assert main(["cache", "save", "--key", "k", "data", "--github-output"], env=env) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert f"error: cannot write the step's outputs to GITHUB_OUTPUT={target}" in lines[-1]
    assert not any("Traceback" in line for line in lines)


def test_a_summary_that_cannot_be_written_is_a_usage_error(tmp_path):
    from ci_integration import report
    from ci_integration.errors import UsageError

    with pytest.raises(UsageError, match=r"GITHUB_STEP_SUMMARY=.*: Is a directory"):
        report.append_step_summary(tmp_path, "# built")


def test_a_deleted_working_folder_is_one_line(tmp_path, monkeypatch, base_env, capsys):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert main(["context"], env=base_env) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "ci-integration: error: the working folder is gone (deleted under this step):"
        " cd into one that exists"
    ]


def test_overrides_are_honoured_or_named_in_a_warning(workspace, base_env, capsys):
    env = {**base_env, "CI_INTEGRATION_IS_FORK": "maybe", "CI_INTEGRATION_READ_ONLY": "true",
           "CI_INTEGRATION_PR_NUMBER": "twelve"}  # fmt: skip
    assert main(["context", "--json"], env=env) == 0
    captured = capsys.readouterr()
    import json

    values = json.loads(captured.out)
    assert (values["is_fork"], values["read_only"], values["pr_number"]) == (False, True, None)
    assert "ignoring CI_INTEGRATION_IS_FORK=maybe: use true or false" in captured.err
    assert "ignoring CI_INTEGRATION_PR_NUMBER=twelve: not a number" in captured.err
    assert "read_only_override" not in values
    # A read-only job does not save.
    env = {**base_env, "CI_INTEGRATION_READ_ONLY": "yes",
           "CI_INTEGRATION_CACHE_DIR": str(workspace / "store")}  # fmt: skip
    (workspace / "data" / "f").write_text("x")
    assert main(["cache", "save", "--key", "k", "data"], env=env) == 0
    assert not (workspace / "store").exists() or not list((workspace / "store").rglob("*.json"))
