from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.support import base_images


@pytest.fixture(autouse=True)
def _no_real_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test may touch the user's real cache: the default store lives in a temp dir."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("CI_INTEGRATION_CACHE_DIR", raising=False)


@pytest.fixture(autouse=True)
def _restore_tool_logger():
    """cli.main() configures the tool's logger; give caplog back what it expects."""
    logger = logging.getLogger("ci_integration")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def base_env() -> dict[str, str]:
    """What every job has, whatever the CI: a PATH to find git and docker."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ["HOME"]}


def write_json(path: Path, data: object) -> Path:
    import json

    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="session")
def docker_client():
    """The real Docker engine. Under CI (or CI_INTEGRATION_REQUIRE_ENGINE) a missing
    engine fails the run instead of skipping, so a green CI always means it ran."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        message = f"no Docker engine answers: {exc}"
        if os.environ.get("CI") == "true" or os.environ.get("CI_INTEGRATION_REQUIRE_ENGINE"):
            pytest.fail(message)
        pytest.skip(message)
    yield client
    client.close()


@pytest.fixture
def busybox_image(docker_client) -> str:
    """A tiny base image made here (no pull); rebuilt if a test wiped the engine."""
    return base_images.busybox_image(docker_client)
