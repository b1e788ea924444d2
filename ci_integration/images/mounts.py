"""BuildKit cache mounts (``RUN --mount=type=cache``) carried across jobs.

No ``--cache-to`` exports a cache mount, and seeding one with a bind mount in the
real build would change that build's cache keys. So the tool runs two small
builds of its own around the real one, on an image already on the engine:
before, a *seed* build copies the restored folder into the mount (the main
build's instructions and their cache are untouched); after, an *extract* build
copies the mount out through ``--output type=local`` and the folder is saved to
the store like any other, keyed by mount id and scoped like everything else.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ci_integration import dircache, process
from ci_integration.ccache import CcacheStats, is_ccache_dir, read_stats
from ci_integration.errors import CacheError
from ci_integration.images.dockerfile import CacheMount
from ci_integration.images.saved import Saved
from ci_integration.store.scoped import Hit, ScopedStore

log = logging.getLogger(__name__)

SAFE_ID = re.compile(r"[A-Za-z0-9_./@+-]+")
CACHE, SEED, EXPORT = "/ci-integration/cache", "/ci-integration/seed", "/ci-integration/export"
LOGICAL_PATH = "cache-mount"  # what dircache records as the entry's path


@dataclasses.dataclass
class MountReport:
    id: str
    target: str
    restored: Hit = Hit.MISS
    restored_from: str = ""
    saved: Saved = Saved.NOT_SAVED
    files: int = 0
    uploaded_bytes: int = 0
    restore_seconds: float = 0.0
    save_seconds: float = 0.0
    ccache: CcacheStats | None = None


class MountCache:
    """Seeds the cache mounts before a build and saves them after, with BuildKit."""

    def __init__(
        self,
        docker: str,
        env: Mapping[str, str],
        store: ScopedStore,
        repository: str,
        mounts: Sequence[CacheMount],
        helper_image: str,
        *,
        buildx: bool = False,
    ) -> None:
        self.docker = docker
        self.env = {**env, "DOCKER_BUILDKIT": "1"}
        self.store = store
        self.repository = repository
        self.helper_image = helper_image
        self.buildx = buildx
        self.mounts = list(mounts)
        self.reports = [MountReport(mount.id, mount.target) for mount in self.mounts]
        self._before: dict[str, CcacheStats] = {}

    def key(self, mount: CacheMount) -> str:
        return f"mount:{self.repository}:{mount.id}"

    def seed(self) -> None:
        """Restore each mount's folder and copy it into the mount; trouble only warns."""
        for mount, report in zip(self.mounts, self.reports, strict=True):
            started = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="ci-integration-mount-") as scratch:
                folder = Path(scratch) / "content"
                result = dircache.restore(self.store, self.key(mount), [], [LOGICAL_PATH], [folder])
                if result.hit is Hit.MISS:
                    continue
                report.restored, report.restored_from = result.hit, result.scope or ""
                if is_ccache_dir(folder):
                    self._before[mount.id] = read_stats(folder)
                self._build(self._seed_dockerfile(mount), folder)
            report.restore_seconds = time.monotonic() - started

    def save(self) -> None:
        """Copy each mount out and save it; an empty mount is not saved."""
        for mount, report in zip(self.mounts, self.reports, strict=True):
            started = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="ci-integration-mount-") as scratch:
                folder, context = Path(scratch) / "content", Path(scratch) / "context"
                context.mkdir()
                self._build(self._extract_dockerfile(mount), context, output=folder)
                if is_ccache_dir(folder):
                    report.ccache = read_stats(folder) - self._before.get(mount.id, CcacheStats())
                if not folder.exists() or not any(folder.iterdir()):
                    report.saved = Saved.EMPTY
                    continue
                result = dircache.save(self.store, self.key(mount), [LOGICAL_PATH], [folder])
            report.saved = Saved.UNCHANGED if result.unchanged else Saved.UPLOADED
            report.files, report.uploaded_bytes = result.files, result.uploaded_bytes
            report.save_seconds = time.monotonic() - started

    def _mount_option(self, mount: CacheMount) -> str:
        options = [f"type=cache,id={mount.id},target={CACHE},sharing=locked"]
        owner = (("uid", mount.uid), ("gid", mount.gid), ("mode", mount.mode))
        options += [f"{name}={value}" for name, value in owner if value is not None]
        return ",".join(options)

    def _seed_dockerfile(self, mount: CacheMount) -> str:
        owner = ""
        if mount.uid is not None or mount.gid is not None:
            owner = f" && chown -R {mount.uid or 0}:{mount.gid or 0} {CACHE}"
        return (
            f"FROM {self.helper_image}\nARG CI_INTEGRATION_BUST\n"
            f"RUN --mount={self._mount_option(mount)} --mount=type=bind,target={SEED} "
            f'echo "$CI_INTEGRATION_BUST" >/dev/null'
            f" && find {CACHE} -mindepth 1 -maxdepth 1 -exec rm -rf {{}} +"
            f" && cp -a {SEED}/. {CACHE}/{owner}\n"
        )

    def _extract_dockerfile(self, mount: CacheMount) -> str:
        return (
            f"FROM {self.helper_image} AS extract\nARG CI_INTEGRATION_BUST\n"
            f"RUN --mount={self._mount_option(mount)} "
            f'echo "$CI_INTEGRATION_BUST" >/dev/null'
            f" && mkdir -p {EXPORT} && cp -a {CACHE}/. {EXPORT}/\n"
            f"FROM scratch\nCOPY --from=extract {EXPORT}/ /\n"
        )

    def _build(self, dockerfile: str, context: Path, output: Path | None = None) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".Dockerfile", delete=False) as stream:
            stream.write(dockerfile)
        try:
            argv = [self.docker, "buildx", "build"] if self.buildx else [self.docker, "build"]
            # A new value each time: these steps must run, never come from the cache.
            argv += [
                "-q",
                "-f",
                stream.name,
                "--build-arg",
                f"CI_INTEGRATION_BUST={time.time_ns()}",
            ]
            if output is not None:
                argv += ["--output", f"type=local,dest={output}"]
            result = process.run([*argv, str(context)], env=self.env, check=False)
        finally:
            os.unlink(stream.name)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            raise CacheError(
                f"the cache-mount helper build on {self.helper_image} failed: {tail[0]}"
            )


def usable_mounts(mounts: Sequence[CacheMount], exclude: Sequence[str]) -> list[CacheMount]:
    """Cache mounts the tool can carry: each id once, none excluded, none it cannot name."""
    chosen: dict[str, CacheMount] = {}
    for mount in mounts:
        if mount.id in exclude or mount.id in chosen:
            continue
        if mount.from_stage or mount.source:
            log.warning("cache mount %s uses from= or source=: not carried across jobs", mount.id)
        elif not SAFE_ID.fullmatch(mount.id):
            log.warning(
                "cache mount id %r has unusual characters: not carried across jobs", mount.id
            )
        else:
            chosen[mount.id] = mount
    return list(chosen.values())
