from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest

from tests.support import base_images, engines


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
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What every job has, whatever the CI: a PATH to find git and docker, the engine
    of this pytest process once a test of the session has started it, and a state
    folder of its own (a test is one job: it never sees another test's restores)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ["HOME"],
           "CI_INTEGRATION_STATE_DIR": str(tmp_path_factory.mktemp("job-state"))}  # fmt: skip
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    return env


def write_json(path: Path, data: object) -> Path:
    import json

    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="session")
def engine_pool():
    """This pytest process's engines, each started on first use: tests/support/engines.py."""
    with engines.pool() as started:
        yield started


@pytest.fixture(scope="session")
def default_engine(engine_pool) -> engines.Engine:
    """This machine's own engine generation (Docker 20.10), private to this process;
    DOCKER_HOST names it for the rest of the session, so every CLI process and client
    a test starts without saying which engine reaches it."""
    engine = engine_pool.get(engines.HOST_KIND)
    if engine.private is not None:
        os.environ["DOCKER_HOST"] = engine.private.docker_host
    return engine


@pytest.fixture(scope="session")
def docker_client(default_engine):
    """The real Docker engine of this pytest process, a private one where it can be."""
    return default_engine.client


@pytest.fixture
def private_engine(default_engine):
    """The process's private engine itself (its network namespace, its socket)."""
    if default_engine.private is None:
        pytest.skip("needs a private Docker engine (root, dockerd)")
    return default_engine.private


@pytest.fixture
def busybox_image(docker_client) -> str:
    """A tiny base image made here (no pull); rebuilt if a test wiped the engine."""
    return base_images.busybox_image(docker_client)


def _stop_the_session(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A run stopped by SIGTERM (a cancelled CI job, ``timeout``, ./dev's own trap)
    unwinds as Ctrl-C does, in the controller and in each xdist worker, so the session
    fixtures stop the engines and servers they started; by default SIGTERM ends the
    process on the spot and leaves them running.

    Under ``--dist loadgroup`` (./dev test), the tests of an xdist_group share a heavy
    fixture on one worker. pytest 9.2 stops xdist from grouping (pytest-xdist issue
    1386): each worker would set the fixture up again, so such a pytest is refused."""
    signal.signal(signal.SIGTERM, _stop_the_session)
    version = tuple(int(part) for part in pytest.__version__.split(".")[:2] if part.isdigit())
    if getattr(config.option, "dist", None) == "loadgroup" and version >= (9, 2):
        raise pytest.UsageError(
            f"--dist loadgroup does not group tests with pytest {pytest.__version__}"
            " (pytest-xdist issue 1386): install the pytest that setup.cfg asks for"
        )
