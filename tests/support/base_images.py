"""Local base images for integration tests and benchmarks, made without any pull.

No container registry is reachable on the test machines, so every base image is built here:

- ``busybox_image``: a ~2 MB image from the host's busybox-static, for fast engine tests.
- ``debian_image``: a real Debian bookworm with gcc, libc6-dev, make and ccache (over 200 MB),
  made by mmdebstrap and imported into the engine. The mmdebstrap tarball is cached on disk, so
  the slow bootstrap runs once per machine; the import runs whenever the tag is missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

BUSYBOX_TAG = "ci-integration-test/busybox:1"
DEBIAN_TAG = "ci-integration-test/debian-gcc:bookworm"

DEBIAN_SUITE = "bookworm"
DEBIAN_VARIANT = "apt"
DEBIAN_PACKAGES = ("gcc", "libc6-dev", "make", "ccache")
# An explicit mirror: with none, mmdebstrap reads sources.list lines from stdin when stdin is
# not a terminal, which under pytest or a CI runner is whatever happens to be there.
DEBIAN_MIRROR = "http://deb.debian.org/debian"

CACHE_ENV = "CI_INTEGRATION_TEST_CACHE"
DEFAULT_CACHE_DIR = "/var/cache/ci-integration-test"

# An imported rootfs has no config at all; give it what a Debian image from a registry has.
_IMPORT_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    'CMD ["bash"]',
]


def cache_dir() -> Path:
    """Where the mmdebstrap tarballs live: ``$CI_INTEGRATION_TEST_CACHE`` or the default."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def _has_image(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def busybox_image(client: docker.DockerClient, tag: str = BUSYBOX_TAG) -> str:
    """Build ``FROM scratch`` + busybox-static's /bin/busybox with its applets; return ``tag``.

    Nothing is built when ``tag`` already exists on the engine.
    """
    if _has_image(client, tag):
        return tag
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.isfile(busybox):
        raise RuntimeError("no busybox binary here: apt-get install busybox-static")
    with tempfile.TemporaryDirectory(prefix="ci-integration-busybox-") as context:
        shutil.copy(busybox, os.path.join(context, "busybox"))
        Path(context, "Dockerfile").write_text(
            "FROM scratch\n"
            "COPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        )
        client.images.build(path=context, tag=tag, rm=True, forcerm=True)
    return tag


def debian_tarball_name(
    suite: str = DEBIAN_SUITE,
    variant: str = DEBIAN_VARIANT,
    packages: tuple[str, ...] = DEBIAN_PACKAGES,
    mirror: str = DEBIAN_MIRROR,
) -> str:
    """The cache file name: a different package list or mirror must not reuse a tarball."""
    recipe = json.dumps(
        {"suite": suite, "variant": variant, "packages": sorted(packages), "mirror": mirror},
        sort_keys=True,
    )
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    return f"debian-{suite}-{variant}-{digest}.tar"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mmdebstrap(target: Path) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise RuntimeError("mmdebstrap is not installed: apt-get install mmdebstrap")
    command = [
        mmdebstrap,
        f"--variant={DEBIAN_VARIANT}",
        f"--include={','.join(DEBIAN_PACKAGES)}",
        "--format=tar",
        DEBIAN_SUITE,
        str(target),
        DEBIAN_MIRROR,
    ]
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-30:])
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{tail}")


def debian_tarball() -> Path:
    """Return the cached mmdebstrap rootfs tarball, making it first if it is missing.

    Safe for concurrent callers: one process bootstraps under a file lock while the others wait,
    and the tarball appears under its final name only once complete.
    """
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    tarball = directory / debian_tarball_name()
    if tarball.is_file():
        return tarball
    with _file_lock(directory / f"{tarball.name}.lock"):
        if tarball.is_file():
            return tarball
        # mmdebstrap chooses the format by the target's suffix too, so the temp name keeps .tar.
        partial = directory / f"{tarball.stem}.partial-{os.getpid()}.tar"
        try:
            _mmdebstrap(partial)
            os.replace(partial, tarball)
        finally:
            partial.unlink(missing_ok=True)
    return tarball


def _import(client: docker.DockerClient, tarball: Path, tag: str) -> None:
    repository, _, version = tag.rpartition(":")
    if not repository or "/" in version:
        repository, version = tag, "latest"
    # import_image treats a str src that is not an existing file as a URL for the engine to
    # fetch, so only ever hand it a path that was just checked.
    if not tarball.is_file():
        raise RuntimeError(f"{tarball} vanished before import")
    output = client.api.import_image(
        src=str(tarball), repository=repository, tag=version, changes=_IMPORT_CHANGES
    )
    # The engine answers 200 and reports a failed import in the JSON stream instead.
    for line in str(output).splitlines():
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("error"):
                raise RuntimeError(f"docker import of {tarball} failed: {message['error']}")
    if not _has_image(client, tag):
        raise RuntimeError(f"docker import of {tarball} did not create {tag}: {output}")


def debian_image(client: docker.DockerClient, tag: str = DEBIAN_TAG) -> str:
    """Import a Debian bookworm rootfs with gcc, libc6-dev, make and ccache; return ``tag``.

    Nothing is done when ``tag`` already exists on the engine. Otherwise the rootfs comes from
    the on-disk cache (see ``debian_tarball``), made by mmdebstrap the first time.
    """
    if _has_image(client, tag):
        return tag
    tarball = debian_tarball()
    # The same lock as the bootstrap, so concurrent callers import once rather than each.
    with _file_lock(tarball.parent / f"{tarball.name}.lock"):
        if not _has_image(client, tag):
            _import(client, tarball, tag)
    return tag
