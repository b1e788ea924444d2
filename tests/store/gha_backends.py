"""The gha:// store's two protocols as backends of the shared contract suite
(conftest.BACKENDS), and the fixtures that start their services:

- v1: the cache server of a running act job (a third-party implementation of the
  protocol GitHub Enterprise Server speaks), handed to the test by the job;
- v2: tests/store/gha_twirp_service.py on 127.0.0.1, the bytes in azurite.

Each contract test gets a service of its own (an act job starts in half a second),
so keys never meet another test's. Neither protocol can list or delete entries:
the backends say so (``can_list=False``) and the tests that need it skip.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

# conftest imports this module: its Backend is looked up when a backend is made.
from tests.store import conftest, gha_twirp_service
from tests.wrappers import Act, make_repository, wait_for

ACT_START_SECONDS = 90


@contextlib.contextmanager
def running_act_cache_service(root: Path) -> Iterator[dict[str, str]]:
    """The cache service of a running act job: URL and token as export-cache-env hands
    them to a step. The job waits (bounded) until the block is left."""
    act = Act(make_repository(root / "repo", "cache-server.yml"), root / "act")
    handoff = root / "handoff"
    with act.start(env={"HANDOFF": str(handoff)}) as process:
        wait_for(handoff, process, timeout=ACT_START_SECONDS)
        url, token, service = handoff.read_text().splitlines()
        assert service == "v1" and url.startswith("http://127.0.0.1:")
        yield {"ACTIONS_CACHE_URL": url, "ACTIONS_RUNTIME_TOKEN": token}
        handoff.with_name("handoff.done").touch()
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output[-3000:]
        assert token not in output  # export-cache-env masked it


@pytest.fixture(scope="session")
def act_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One act job's cache service for the session: tests that share it use keys of
    their own."""
    with running_act_cache_service(tmp_path_factory.mktemp("act-cache-service")) as env:
        yield env


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """azurite's blob service for the session; its account URL."""
    binary = gha_twirp_service.azurite_binary()
    if binary is None:
        if os.environ.get("CI") == "true":  # a green CI means the backend was tested
            pytest.fail(gha_twirp_service.INSTALL_HINT)
        pytest.skip(gha_twirp_service.INSTALL_HINT)
    with gha_twirp_service.running_azurite(binary, tmp_path_factory.mktemp("azurite")) as url:
        yield url


@pytest.fixture
def twirp_service(azurite: str) -> Iterator[gha_twirp_service.TwirpCacheService]:
    """A fresh v2 service for one test (its blobs in the session's azurite)."""
    token = f"fake-runtime-token-{secrets.token_hex(12)}"
    with gha_twirp_service.running_twirp_service(azurite, token) as service:
        yield service


def gha_v1_backend(request: pytest.FixtureRequest, tmp_path: Path) -> conftest.Backend:
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    env = stack.enter_context(running_act_cache_service(tmp_path / "act-cache-service"))
    return conftest.Backend("gha-v1", "gha://", env, can_list=False)


def gha_v2_backend(request: pytest.FixtureRequest, tmp_path: Path) -> conftest.Backend:
    service = request.getfixturevalue("twirp_service")
    return conftest.Backend("gha-v2", "gha://", gha_twirp_service.job_env(service), can_list=False)
