"""The jenkins:// store in the contract suite (conftest.BACKENDS): a build of branch
``feature`` of the multibranch project ``proj`` (default branch ``main``), whose
workspace folder the loopback Jenkins also serves as the last successful build of
``proj/feature`` and ``proj/main``. So what a test saves is in the folder, and what
it then restores from ``branch-main`` comes through Jenkins' API, as it would from
the default branch's archived build."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ci_integration.store.jenkins import DEFAULT_FOLDER
from tests.store import jenkins_front

if TYPE_CHECKING:
    from tests.store.conftest import Backend

# Recognisable in any output: no log line, message or traceback may show it.
JENKINS_USER = "cache-reader"
JENKINS_TOKEN = "11fake-jenkins-api-token-DO-NOT-PRINT"


def jenkins_env(url: str, workspace: Path, **variables: str) -> dict[str, str]:
    """What a multibranch build of ``feature`` has, plus the API token bound by the step."""
    return {
        "JENKINS_URL": url,
        "JENKINS_USER": JENKINS_USER,
        "JENKINS_TOKEN": JENKINS_TOKEN,
        "JOB_NAME": "proj/feature",
        "BRANCH_NAME": "feature",
        "BUILD_NUMBER": "2",
        "WORKSPACE": str(workspace),
        # As git's origin/HEAD would say; the build of main says BRANCH_IS_PRIMARY.
        "CI_INTEGRATION_DEFAULT_BRANCH": "main",
        **variables,
    }


def jenkins_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    from tests.store.conftest import Backend  # which imports this module

    front = request.getfixturevalue("jenkins_contract_front")
    workspace = tmp_path / "workspace"
    for job in ("proj/feature", "proj/main"):
        front.publish(job, 1, workspace, DEFAULT_FOLDER)
    return Backend("jenkins", "jenkins://", jenkins_env(front.url, workspace))


@pytest.fixture
def jenkins_contract_front() -> Iterator[jenkins_front.Front]:
    with jenkins_front.serve(JENKINS_USER, JENKINS_TOKEN) as front:
        yield front
