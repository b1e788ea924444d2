"""Without --store, the CLI picks the store, and only the CLI: $CI_INTEGRATION_STORE,
else the GitHub Actions cache where the job has its service (either protocol, the
variables as export-cache-env hands them over), else a folder of this machine. The
actions pass their store input on and nothing else (tests/wrappers/test_actions.py)."""

from __future__ import annotations

import pytest

from ci_integration.cli import main

V1 = {"ACTIONS_CACHE_URL": "http://cache/", "ACTIONS_RUNTIME_TOKEN": "t"}
V2 = {"ACTIONS_CACHE_SERVICE_V2": "True", "ACTIONS_RESULTS_URL": "https://results/",
      "ACTIONS_RUNTIME_TOKEN": "t"}  # fmt: skip
LOCAL = "file:///home/runner/.cache/ci-integration"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (V1, "gha://"),
        (V2, "gha://"),
        ({**V1, "ACTIONS_CACHE_SERVICE_V2": "true"}, LOCAL),  # v2 without its URL
        ({"ACTIONS_RESULTS_URL": "https://results/", "ACTIONS_RUNTIME_TOKEN": "t"}, LOCAL),
        ({"ACTIONS_CACHE_URL": "http://cache/"}, LOCAL),  # no token
        ({**V1, "ACTIONS_CACHE_URL": "ftp://cache/"}, LOCAL),
        ({**V2, "CI_INTEGRATION_STORE": "s3://b/p"}, "s3://b/p"),
        ({}, LOCAL),
    ],
)
def test_the_default_store_is_the_github_cache_where_the_job_has_its_service(env, expected, capsys):
    code = main(["context", "--default-store"], env={"HOME": "/home/runner", **env})
    assert (code, capsys.readouterr().out) == (0, expected + "\n")


def test_a_github_step_without_the_service_is_told_its_cache_stays_on_the_machine(capsys):
    env = {"HOME": "/home/runner", "GITHUB_ACTIONS": "true"}
    assert main(["context", "--default-store"], env=env) == 0
    assert "only a self-hosted runner keeps" in capsys.readouterr().err
    assert main(["context", "--default-store"], env={**env, **V2}) == 0
    assert "self-hosted" not in capsys.readouterr().err


def test_the_cache_commands_use_the_store_it_prints(tmp_path, base_env, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a").write_text("a\n")
    env = {**base_env, "CI_INTEGRATION_CACHE_DIR": str(tmp_path / "my store")}
    assert main(["context", "--default-store"], env=env) == 0
    assert capsys.readouterr().out == f"file://{tmp_path}/my%20store\n"
    assert main(["cache", "save", "data", "--key", "k"], env=env) == 0
    assert any((tmp_path / "my store" / "entries").rglob("k.json"))
