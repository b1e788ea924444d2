"""What the engine and its client say of themselves, and the cache mechanism that fits.

Users run Docker 20.10 to 29: the classic image store or the containerd one, the
legacy builder, BuildKit built into the client (before 23.0), or buildx with its
``docker`` driver or another (docker-container, remote, kubernetes). Which way of
caching a build works is decided here, from these facts, and nowhere else:

- ``stage-images``: every stage an image carrying BuildKit's inline cache (or the
  legacy builder's history), offered as ``--cache-from``; layers through the store.
  Needs the classic image store and a builder that builds into it.
- ``buildkit-cache``: BuildKit's own cache export (``type=local``, ``mode=max``),
  an OCI layout whose blobs go through the store. For the containerd image store
  (where ``--cache-from IMAGE`` of a local image is looked up in a registry) and
  for buildx drivers other than ``docker`` (whose builds never reach the engine's
  image store unless loaded).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ci_integration import process
from ci_integration.errors import CommandError, UsageError

if TYPE_CHECKING:
    import docker

CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1"
STAGE_IMAGES = "stage-images"
BUILDKIT_CACHE = "buildkit-cache"

_CLIENT_VERSION = re.compile(r"version (\d+\.\d+[.\w+~-]*)")
_BUILDX_VERSION = re.compile(r"\bv?(\d+\.\d+\.\d+[\w.+~-]*)")
_DRIVER = re.compile(r"^Driver:\s*(\S+)", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class EngineFacts:
    client: str  # the docker client the tool runs
    client_version: str | None
    server_version: str
    api_version: str
    image_store: str  # "classic" or "containerd"
    buildx_version: str | None  # None: no buildx plugin for this client
    buildx_driver: str | None  # the current builder's driver: docker, docker-container...

    @property
    def client_major(self) -> int | None:
        return _major(self.client_version)

    @property
    def has_builtin_buildkit(self) -> bool:
        """Clients before 23.0 run BuildKit with DOCKER_BUILDKIT=1; later ones only
        through buildx."""
        major = self.client_major
        return major is not None and major < 23

    def mechanism(self, builder: str) -> str:
        """How a build with ``builder`` (buildx, buildkit, legacy) is cached here."""
        if builder == "buildx" and self.buildx_driver not in (None, "docker"):
            return BUILDKIT_CACHE
        if self.image_store == "containerd" and builder != "legacy":
            return BUILDKIT_CACHE
        return STAGE_IMAGES

    def describe(self) -> str:
        """One line for a build's log."""
        parts = [f"Docker {self.server_version} (API {self.api_version})"]
        parts.append(f"{self.image_store} image store")
        if self.buildx_version:
            parts.append(f"buildx {self.buildx_version} ({self.buildx_driver or '?'} driver)")
        parts.append(f"client {self.client_version or '?'}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, str | None]) -> EngineFacts:
        """The facts again, from what ``as_dict`` gave (a build report's ``engine``)."""
        return cls(
            client=str(values["client"]),
            client_version=values["client_version"],
            server_version=str(values["server_version"]),
            api_version=str(values["api_version"]),
            image_store=str(values["image_store"]),
            buildx_version=values["buildx_version"],
            buildx_driver=values["buildx_driver"],
        )


class FactsProbe:
    """The facts, asked for at once and awaited when needed: the engine answers
    straight away, the client's three probes (each starts a Go program: ~0.15 s)
    run in threads meanwhile, so a build can restore while they run."""

    def __init__(self, api: docker.APIClient, client: str, env: Mapping[str, str]) -> None:
        self.client = client
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=3)
        self._client_version = self._pool.submit(client_version, client, env)
        self._buildx_version = self._pool.submit(_output, [client, "buildx", "version"], env)
        self._inspected = self._pool.submit(_output, [client, "buildx", "inspect"], env)
        self._pool.shutdown(wait=False)
        self._version, self._info = api.version(), api.info()
        self._facts: EngineFacts | None = None

    @property
    def image_store(self) -> str:
        return image_store(self._info)

    def result(self) -> EngineFacts:
        if self._facts is None:
            buildx = _buildx(self._buildx_version.result(), self._inspected.result())
            self._facts = EngineFacts(
                client=self.client,
                client_version=self._client_version.result(),
                server_version=str(self._version.get("Version", "?")),
                api_version=str(self._version.get("ApiVersion", "?")),
                image_store=self.image_store,
                buildx_version=buildx[0],
                buildx_driver=buildx[1],
            )
        return self._facts


def image_store(info: Mapping[str, Any]) -> str:
    """``containerd`` when ``docker info`` names the containerd snapshotter."""
    for pair in info.get("DriverStatus") or ():
        if len(pair) == 2 and pair[0] == "driver-type" and pair[1] == CONTAINERD_SNAPSHOTTER:
            return "containerd"
    return "classic"


def client_version(client: str, env: Mapping[str, str]) -> str | None:
    try:
        output = process.run([client, "--version"], env=env).stdout
    except CommandError as exc:
        raise UsageError(f"cannot run the docker client {client}: {exc}") from None
    match = _CLIENT_VERSION.search(output)
    return match.group(1).rstrip(",") if match else None


def _buildx(version: str | None, inspected: str | None) -> tuple[str | None, str | None]:
    """buildx's version and the current builder's driver, from what the client printed."""
    if version is None:
        return None, None
    found = _BUILDX_VERSION.search(version)
    driver = _DRIVER.search(inspected or "")
    return (found.group(1) if found else "?"), (driver.group(1) if driver else None)


def _output(argv: list[str], env: Mapping[str, str]) -> str | None:
    try:
        done = process.run(argv, env=env, check=False)
    except CommandError:
        return None
    return done.stdout if done.returncode == 0 else None


def _major(version: str | None) -> int | None:
    if not version:
        return None
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None
