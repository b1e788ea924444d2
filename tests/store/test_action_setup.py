"""The actions' install step (actions/lib/setup.sh) as a workflow using an S3 store
runs it: the tool it installs from the checkout has what the S3 store needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.wrappers import ROOT


def run_setup(action: str, env: dict[str, str], output: Path) -> dict[str, str]:
    action_env = {"GITHUB_ACTION_PATH": str(ROOT / "actions" / action),
                  "GITHUB_OUTPUT": str(output)}  # fmt: skip
    done = subprocess.run(
        ["bash", str(ROOT / "actions/lib/setup.sh"), "../../..", "store"],
        env={**env, **action_env},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(line.split("=", 1) for line in output.read_text().splitlines())


def test_an_action_with_an_s3_store_installs_the_tool_with_its_s3_client(
    tmp_path, base_env, s3_env, bucket
):
    (tmp_path / "work" / "deps").mkdir(parents=True)
    (tmp_path / "work" / "deps" / "lib.txt").write_text("library\n")
    store = f"s3://{bucket}/cache"
    env = {**base_env, **s3_env, "GITHUB_WORKSPACE": str(tmp_path / "work"),
           "CI_INTEGRATION_PYTHON": sys.executable, "INPUT_STORE": store,
           "CI_INTEGRATION_VENV_DIR": str(tmp_path / "venvs")}  # fmt: skip
    outputs = run_setup("cache/save", env, tmp_path / "output")
    assert outputs["export-cache-env"] == "false"
    assert Path(outputs["cli"]).parent.parent.name.endswith("-s3")
    saved = subprocess.run(
        [outputs["cli"], "cache", "save", "--key", "deps", "--store", store, "--json", "deps"],
        cwd=tmp_path / "work", env={**env, "GITHUB_ACTIONS": "", "GITHUB_REF_NAME": ""},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert saved.returncode == 0 and json.loads(saved.stdout)["saved"] is True, saved.stderr
    assert "boto3" not in saved.stderr
