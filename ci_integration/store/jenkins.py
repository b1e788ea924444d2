"""The Jenkins artifacts store (``jenkins://``): saves write a folder in the
workspace that the pipeline archives (``archiveArtifacts``, which ``ciCache`` does),
and restores read the archived folders of earlier builds through Jenkins' API.

URL: ``jenkins://`` writes ``$WORKSPACE/.ci-integration-cache``;
``jenkins:///FOLDER`` writes ``$WORKSPACE/FOLDER`` (letters, digits, ``. _ -`` and
``/``). Every job of a project must use the same folder: an archived build is read
at the same place. The folder has the local store's layout (store/local.py), so
writes are the local store's: temp file and rename, flock, sweep.

Reads, scope by scope (store/jenkins_jobs.py maps the chain to jobs):

- the job's own scope: the folder first (what this build, or an earlier one in the
  same workspace, saved), then the job's own last successful build;
- the pull request's target and the default branch: their jobs' last successful
  builds (a multibranch project only; a plain job reads only its own builds);
- any other scope: the folder only.

A job's last successful build is asked for once and pinned by number, so a build
that finishes during a restore cannot mix two builds' files. An entry read from a
build has its blobs read from the same build (the folder first, as blobs are
named by content).

Each build's artifacts stand alone, so the folder must hold every blob its entries
name: ``has_blob`` answers for the folder only (a save packs again what is only in
an earlier build), and ``put_entry`` copies in, from the builds read, any blob the
entry names that the folder lacks. A save that finds its entry unchanged in the
job's last build marks it used (``touch_entry``), which copies that entry into the
folder once the folder holds all its blobs, so the next build finds it in this
build's artifacts.

Listing, deleting and pruning act on the folder only: Jenkins' API cannot delete
an artifact, and its build discarder keeps the archived folders bounded.

Jenkins is reached with requests (jenkins_client.py), not python-jenkins: the
store needs three GETs, and python-jenkins has no ``tree`` parameter and answers a
missing build and a refused login with the same exception. Without JENKINS_URL or
JOB_NAME the store reads the folder alone, and says so once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path

from ci_integration.errors import CorruptDataError
from ci_integration.store.base import (
    REMOTE_COMPRESSION_LEVEL,
    BlobInfo,
    BlobNotFound,
    EntryInfo,
    digest_of,
)
from ci_integration.store.jenkins_client import Build, JenkinsClient
from ci_integration.store.local import LocalStore
from ci_integration.store.manifest import Manifest

log = logging.getLogger(__name__)

DEFAULT_FOLDER = ".ci-integration-cache"


class JenkinsStore:
    # The folder is a local store: saves and prunes share its flock.
    blob_grace_seconds = 0.0
    compression_level = REMOTE_COMPRESSION_LEVEL  # the build archives it to the controller

    def __init__(
        self,
        workspace: Path,
        folder: str,
        own_scope: str,
        jobs: Mapping[str, str],
        client: JenkinsClient | None,
    ) -> None:
        self.folder_name = folder
        self.folder = LocalStore(workspace / folder)
        self.own_scope = own_scope
        self.jobs = dict(jobs)
        self.client = client
        self._pinned: dict[str, Build | None] = {}
        self._sources: list[Build] = []  # builds entries were read from, latest first
        self._read: dict[tuple[str, str], bytes] = {}  # own-scope entries read from builds
        self._lock = threading.Lock()
        if client is None or not self.jobs:
            log.warning(
                "jenkins:// without JENKINS_URL and JOB_NAME: restoring only from %s",
                self.folder.root,
            )

    @property
    def description(self) -> str:
        reads = f", reading {self.client.where}" if self.client else ""
        return f"jenkins:// (writing {self.folder.root}{reads})"

    def artifacts(self) -> dict[str, str]:
        """The folder, for the next builds to read; not what an interrupted write left."""
        name = self.folder_name
        return {"artifacts": f"{name}/**", "excludes": f"{name}/tmp/**,{name}/lock"}

    # Blobs

    def has_blob(self, digest: str) -> bool:
        return self.folder.has_blob(digest)

    def put_blob(self, digest: str, data: bytes) -> None:
        self.folder.put_blob(digest, data)

    def get_blob(self, digest: str) -> bytes:
        with contextlib.suppress(BlobNotFound):
            return self.folder.get_blob(digest)
        for build in self._builds_read():
            data = self._artifact(build, _blob_path(digest))
            if data is not None:
                return data
        raise BlobNotFound(digest)

    def delete_blob(self, digest: str) -> None:
        self.folder.delete_blob(digest)

    def list_blobs(self) -> Iterator[BlobInfo]:
        return self.folder.list_blobs()

    # Entries

    def put_entry(self, scope: str, key: str, manifest: bytes) -> None:
        for blob in Manifest.from_json(manifest).blobs:
            if not self.folder.has_blob(blob.digest):
                self.folder.put_blob(blob.digest, self._blob_from_builds(blob.digest, key))
        self.folder.put_entry(scope, key, manifest)

    def get_entry(self, scope: str, key: str) -> bytes | None:
        if scope == self.own_scope or scope not in self.jobs:
            data = self.folder.get_entry(scope, key)
            if data is not None or scope not in self.jobs:
                return data
        build = self._pin(self.jobs[scope])
        if build is None:
            return None
        data = self._artifact(build, _entry_path(scope, key))
        if data is not None:
            with self._lock:
                self._sources = [build] + [b for b in self._sources if b != build]
                if scope == self.own_scope:
                    self._read[(scope, key)] = data
        return data

    def newest_entry(self, scope: str, prefix: str) -> str | None:
        """The newest key of ``scope`` starting with ``prefix``, in the folder or the
        scope's build (by the manifests' creation time)."""
        candidates: list[tuple[float, str]] = []
        if scope == self.own_scope or scope not in self.jobs:
            candidates += [
                (entry.created, entry.key)
                for entry in self.folder.list_entries(scope)
                if entry.key.startswith(prefix)
            ]
        build = self._pin(self.jobs[scope]) if scope in self.jobs else None
        if build is not None:
            assert self.client is not None  # a build was pinned through it
            folder = self._archived(f"entries/{scope}/")
            for path in self.client.artifacts(build):
                if not (path.startswith(folder) and path.endswith(".json")):
                    continue
                key = urllib.parse.unquote(path[len(folder) : -len(".json")])
                if key.startswith(prefix) and (data := self.client.artifact(build, path)):
                    with contextlib.suppress(CorruptDataError):
                        candidates.append((Manifest.from_json(data).created, key))
        return max(candidates)[1] if candidates else None

    def touch_entry(self, scope: str, key: str) -> None:
        """Marks the folder's entry used. An entry of the job's own scope read from
        its last build is carried into the folder instead, once the folder holds its
        blobs (a save that found it unchanged): the next build then finds it in
        this build's artifacts."""
        read = self._read.get((scope, key))
        if read is None or self.folder.get_entry(scope, key) is not None:
            self.folder.touch_entry(scope, key)
            return
        with contextlib.suppress(CorruptDataError):
            if all(self.folder.has_blob(b.digest) for b in Manifest.from_json(read).blobs):
                self.folder.put_entry(scope, key, read)

    def delete_entry(self, scope: str, key: str) -> None:
        self.folder.delete_entry(scope, key)

    def list_entries(self, scope: str | None = None) -> list[EntryInfo]:
        """The folder's entries: what this workspace saved, not what Jenkins keeps."""
        return self.folder.list_entries(scope)

    def lock(self, *, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return self.folder.lock(exclusive=exclusive)

    def sweep(self) -> int:
        return self.folder.sweep()

    # Jenkins

    def _pin(self, job: str) -> Build | None:
        if self.client is None:
            return None
        with self._lock:
            if job not in self._pinned:
                self._pinned[job] = self.client.last_successful(job)
                if self._pinned[job] is None:
                    log.info("no successful build of %s to restore from", job)
            return self._pinned[job]

    def _artifact(self, build: Build, path: str) -> bytes | None:
        assert self.client is not None  # a build was pinned through it
        return self.client.artifact(build, self._archived(path))

    def _archived(self, path: str) -> str:
        """Where a file of the folder is among a build's artifacts: its path from the workspace."""
        return f"{self.folder_name}/{path}"

    def _builds_read(self) -> list[Build]:
        with self._lock:
            return list(self._sources)

    def _blob_from_builds(self, digest: str, key: str) -> bytes:
        for build in self._builds_read():
            data = self._artifact(build, _blob_path(digest))
            if data is not None and digest_of(data) == digest:
                return data
        raise OSError(
            f"cannot save {key}: blob {digest[:19]} is neither in {self.folder.root} "
            "nor in a build read"
        )


def _entry_path(scope: str, key: str) -> str:
    """As the local store lays out an entry."""
    return f"entries/{scope}/{urllib.parse.quote(key, safe='')}.json"


def _blob_path(digest: str) -> str:
    hexdigest = digest.removeprefix("sha256:")
    return f"blobs/{hexdigest[:2]}/{hexdigest}"
