"""Wrong invocations: each gets one line that says what to fix, and its documented
exit code (README, "Exit codes"); none needs a working engine or store to say so."""

from __future__ import annotations

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
