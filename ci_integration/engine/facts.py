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

from ci_integration import process
from ci_integration.errors import CommandError, UsageError

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


def detect(api, client: str, env: Mapping[str, str]) -> EngineFacts:
    """Ask the engine (``api``: docker-py's APIClient) and the client ``client``; the
    client's three probes run at once (each starts a Go program: ~0.15 s)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        client_probe = pool.submit(client_version, client, env)
        buildx_probe = pool.submit(_output, [client, "buildx", "version"], env)
        inspect_probe = pool.submit(_output, [client, "buildx", "inspect"], env)
        version, info = api.version(), api.info()
        buildx_version, buildx_driver = _buildx(buildx_probe.result(), inspect_probe.result())
        return EngineFacts(
            client=client,
            client_version=client_probe.result(),
            server_version=str(version.get("Version", "?")),
            api_version=str(version.get("ApiVersion", "?")),
            image_store=image_store(info),
            buildx_version=buildx_version,
            buildx_driver=buildx_driver,
        )


def image_store(info: Mapping) -> str:
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
