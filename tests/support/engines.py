"""The Docker engine the integration suites run on: one private dockerd for each pytest
process (each xdist worker), so that no test sees another's images, a wipe in one
worker never races a build in another, and the host's engine is never touched.

Where no private engine can run (not root, no dockerd), the suites fall back on the
engine that ``DOCKER_HOST`` names, and wipe it as they go. With neither, the engine
tests skip, except under CI (or ./dev test), where that fails the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support import private_engine

# Set by ./dev test: a missing engine fails the run instead of skipping it.
REQUIRE_ENV = "CI_INTEGRATION_REQUIRE_ENGINE"


def _engine_required() -> bool:
    return os.environ.get("CI") == "true" or bool(os.environ.get(REQUIRE_ENV))


@contextlib.contextmanager
def worker_engine() -> Iterator[tuple[docker.DockerClient, private_engine.PrivateEngine | None]]:
    """This process's engine, started on first use; DOCKER_HOST points at it for the rest
    of the session, so every CLI process and client a test starts reaches it."""
    why_not = private_engine.available()
    if why_not is not None:
        with _host_engine(why_not) as client:
            yield client, None
        return
    # A short root: unix socket paths are limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="ci-int-engine-"))
    root.chmod(0o711)  # a test's CI agent (not root, in the docker group) reaches the socket
    saved = os.environ.get("DOCKER_HOST")
    try:
        with private_engine.running(root) as engine:
            os.environ["DOCKER_HOST"] = engine.docker_host
            with contextlib.closing(engine.client()) as client:
                yield client, engine
    finally:
        if saved is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = saved
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _host_engine(why_no_private: str) -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        message = f"no private engine ({why_no_private}), and no Docker engine answers: {exc}"
        if _engine_required():
            pytest.fail(message)
        pytest.skip(message)
    with contextlib.closing(client):
        yield client
