"""The Docker engines the integration suites run on: private dockerds that each pytest
process (each xdist worker) starts for itself, so that no test sees another's images,
a wipe in one worker never races a build in another, and the host's engine is never
touched.

The engine matrix is the engines users run (DESIGN.md): this machine's Docker 20.10
(Debian bookworm), Docker 28 with buildx on the classic image store (GitHub's
ubuntu-24.04 runners), and Docker 28 with the containerd image store (what Docker 29
turns on for fresh installs), both from Debian sid's packages; Docker 26 (trixie) on
request. ``CI_INTEGRATION_TEST_ENGINES`` picks (a comma-separated list of names).

Where no private engine can run (not root, no dockerd), the suites fall back on the
engine that ``DOCKER_HOST`` names, and wipe it as they go. With neither, the engine
tests skip, except under CI (or ./dev test), where that fails the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support import private_engine
from tests.support.private_engine import HOST_KIND, EngineKind

# Set by ./dev test: a missing engine fails the run instead of skipping it.
REQUIRE_ENV = "CI_INTEGRATION_REQUIRE_ENGINE"
MATRIX_ENV = "CI_INTEGRATION_TEST_ENGINES"

KINDS = {
    kind.name: kind
    for kind in (
        HOST_KIND,
        EngineKind("26", suite="trixie"),
        EngineKind("28", suite="sid"),
        EngineKind("28-containerd", suite="sid", containerd_store=True),
    )
}
DEFAULT_MATRIX = ("20.10", "28", "28-containerd")


def engine_required() -> bool:
    return os.environ.get("CI") == "true" or bool(os.environ.get(REQUIRE_ENV))


def matrix() -> list[EngineKind]:
    """The engines the matrix tests run on."""
    names = [n.strip() for n in os.environ.get(MATRIX_ENV, "").split(",") if n.strip()]
    unknown = sorted(set(names) - set(KINDS))
    if unknown:
        raise pytest.UsageError(f"{MATRIX_ENV}: no engine {unknown[0]} (known: {', '.join(KINDS)})")
    return [KINDS[name] for name in names or DEFAULT_MATRIX]


@dataclasses.dataclass
class Engine:
    """A running engine and what a job needs to use it."""

    kind: EngineKind
    client: docker.DockerClient
    private: private_engine.PrivateEngine | None  # None: the host's engine

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def docker(self) -> str:
        """The docker client binary of the engine's own version."""
        return self.kind.client

    @property
    def env(self) -> dict[str, str]:
        if self.private is None:
            return {k: os.environ[k] for k in ("DOCKER_HOST",) if k in os.environ}
        return self.private.env


class EnginePool:
    """This process's engines, each started on first use and stopped at the end."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._engines: dict[str, Engine] = {}

    def get(self, kind: EngineKind) -> Engine:
        if kind.name not in self._engines:
            self._engines[kind.name] = self._start(kind)
        return self._engines[kind.name]

    def close(self) -> None:
        self._stack.close()

    def _start(self, kind: EngineKind) -> Engine:
        why_not = private_engine.available() or kind.missing()
        if why_not is not None:
            if kind is not HOST_KIND:
                if engine_required():
                    pytest.fail(f"no Docker {kind.name} engine here: {why_not}")
                pytest.skip(f"no Docker {kind.name} engine here: {why_not}")
            return Engine(kind, self._stack.enter_context(_host_engine(why_not)), None)
        # A short root: unix socket paths are limited to 108 bytes.
        root = Path(tempfile.mkdtemp(prefix="ci-int-engine-"))
        root.chmod(0o711)  # a test's CI agent (not root, in the docker group) reaches the socket
        self._stack.callback(shutil.rmtree, root, ignore_errors=True)
        started = self._stack.enter_context(private_engine.running(root, kind=kind))
        client = self._stack.enter_context(contextlib.closing(started.client()))
        return Engine(kind, client, started)


@contextlib.contextmanager
def pool() -> Iterator[EnginePool]:
    engines = EnginePool()
    try:
        yield engines
    finally:
        engines.close()


@contextlib.contextmanager
def _host_engine(why_no_private: str) -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        message = f"no private engine ({why_no_private}), and no Docker engine answers: {exc}"
        if engine_required():
            pytest.fail(message)
        pytest.skip(message)
    with contextlib.closing(client):
        yield client
