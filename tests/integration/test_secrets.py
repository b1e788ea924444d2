"""No secret in anything a job shows: a build and a cache round trip on GitHub
Actions with tokens set, every byte of stdout, stderr, outputs and step summary
scanned."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.support import base_images

pytestmark = pytest.mark.engine

SECRETS = {
    "GITHUB_TOKEN": "ghp_" + uuid.uuid4().hex,
    "ACTIONS_RUNTIME_TOKEN": "runtime-" + uuid.uuid4().hex,
    "JENKINS_TOKEN": "jenkins-" + uuid.uuid4().hex,
    "AWS_SECRET_ACCESS_KEY": "aws-" + uuid.uuid4().hex,
    "NPM_TOKEN": "npm-" + uuid.uuid4().hex,
}


def test_a_full_run_shows_no_secret(docker_client, tmp_path, base_env):
    base = base_images.busybox_image(docker_client)
    project = tmp_path / "project"
    project.mkdir()
    (project / "Dockerfile").write_text(
        f"FROM {base} AS build\nARG NPM_TOKEN\n"
        # A careless step that prints the secret: the tool's log must still mask it.
        'RUN echo "token is $NPM_TOKEN" && echo built > /out\n'
        f"FROM {base}\nCOPY --from=build /out /out\n"
    )
    (tmp_path / "deps").mkdir()
    (tmp_path / "deps" / "lib.txt").write_text("x")
    outputs, summary = tmp_path / "github_output", tmp_path / "summary.md"
    env = {
        **base_env, **SECRETS,
        "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/heads/main",
        "GITHUB_REPOSITORY": "acme/widget", "GITHUB_RUN_ID": "77",
        "GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary),
        "CI_INTEGRATION_CACHE_DIR": str(tmp_path / "store"),
    }  # fmt: skip
    cli = [sys.executable, "-m", "ci_integration", "--debug"]
    runs = [
        [*cli, "context", "--json", "--github-output"],
        [*cli, "build", "project", "-t", "ci-integration-test/secret:1", "--build-arg",
         "NPM_TOKEN", "--docker", "/usr/bin/docker", "--json", "--github-output"],
        [*cli, "cache", "save", "deps", "--key", "deps-{hash:deps/**}", "--json"],
        [*cli, "cache", "restore", "deps", "--key", "deps-{hash:deps/**}", "--github-output"],
        [*cli, "cache", "save", "deps", "--key", "k", "--store", "s3://bucket/x", "--strict"],
    ]  # fmt: skip
    shown = []
    for argv in runs:
        result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        shown += [result.stdout, result.stderr]
    shown += [outputs.read_text(), summary.read_text()]
    everything = "\n".join(shown)
    assert "token is ***" in everything  # the careless step ran, and was masked
    for name, value in SECRETS.items():
        assert value not in everything, f"{name} leaked"
