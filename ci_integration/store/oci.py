"""The OCI registry store (``oci://HOST/REPO``): blobs and entries as OCI artifacts in a
registry a team already runs (distribution spec v1.1). In repository REPO::

    blob sha256:HEX     a store blob is a registry blob: the digests are the same
    tag e-SCOPE-HASH    an entry: an image manifest (artifactType ENTRY_ARTIFACT, the
                        empty descriptor as config) whose first layer is the entry's
                        JSON and whose other layers are the blobs that JSON names; key,
                        scope and creation time in its annotations
    tag u-SCOPE-HASH    the entry's last use: a small manifest's annotation, rewritten
                        by touch_entry, so use never rewrites the entry

HASH is 32 hex digits of the sha256 of scope and key (a tag has at most 128 of
[A-Za-z0-9_.-]). An entry is one manifest PUT, shown whole or not at all, and refused
while a blob it names is missing. The registry's garbage collector keeps the blobs
named as layers, and reclaims those of deleted entries and of interrupted saves.

A registry cannot list a repository's blobs, and there is no lock (as on S3). list_blobs
gives the blobs the entries name, dated the moment of listing, and those this handle
uploaded; so prune drops entries (by age, --keep-last, --max-size) but no blob an entry
names, even one a save commits while prune runs. The space comes back with the
registry's garbage collection (``registry garbage-collect``, registry read-only).
Listing entries reads two manifests an entry, eight at a time: fine for hundreds of
entries, slow for tens of thousands.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ci_integration.errors import CorruptDataError
from ci_integration.store.base import (
    DIGEST_PATTERN,
    REMOTE_COMPRESSION_LEVEL,
    BlobInfo,
    BlobNotFound,
    EntryInfo,
    no_lock,
)
from ci_integration.store.manifest import Manifest
from ci_integration.store.registry_client import RegistryClient
from ci_integration.store.registry_repository import OCI_MANIFEST, Repository

log = logging.getLogger(__name__)

ENTRY_ARTIFACT = "application/vnd.ci-integration.entry.v1"
LAST_USE_ARTIFACT = "application/vnd.ci-integration.last-use.v1"
ENTRY_LAYER = "application/vnd.ci-integration.entry.v1+json"
BLOB_LAYER = "application/vnd.ci-integration.blob.v1"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2}
KEY, SCOPE = "io.ci-integration.key", "io.ci-integration.scope"
CREATED, LAST_USED = "org.opencontainers.image.created", "io.ci-integration.last-used"
LISTING_WORKERS = 8
GRACE_SECONDS = 3600.0
SCOPE_IN_TAG = 128 - len("e--") - 32

_TAG = re.compile(r"([eu])-(.*)-([0-9a-f]{32})")
_NOT_IN_TAGS = re.compile(r"[^A-Za-z0-9_.-]")


class OCIStore:
    blob_grace_seconds = GRACE_SECONDS
    compression_level = REMOTE_COMPRESSION_LEVEL

    def __init__(self, host: str, repository: str, env: Mapping[str, str]) -> None:
        self.host, self.repository = host, repository
        self.api = Repository(RegistryClient(host, env, self.description), repository)
        # Listed until deleted, so that a prune in the same process can drop what an
        # interrupted save of that process left.
        self._uploads: dict[str, BlobInfo] = {}
        self._uploads_lock = threading.Lock()
        self._empty_stored = False

    @property
    def description(self) -> str:
        return f"oci://{self.host}/{self.repository}"

    # Blobs

    def has_blob(self, digest: str) -> bool:
        return self.api.has_blob(digest)

    def put_blob(self, digest: str, data: bytes) -> None:
        self.api.upload_blob(digest, data)
        with self._uploads_lock:
            self._uploads[digest] = BlobInfo(digest, len(data), time.time())

    def get_blob(self, digest: str) -> bytes:
        data = self.api.get_blob(digest)
        if data is None:
            raise BlobNotFound(digest)
        return data

    def delete_blob(self, digest: str) -> None:
        self.api.delete_blob(digest)
        with self._uploads_lock:
            self._uploads.pop(digest, None)

    def list_blobs(self) -> Iterator[BlobInfo]:
        now, named = time.time(), {}
        for document in self._read_manifests(self._tags("e", None)).values():
            for layer in document["layers"][1:]:
                named[layer["digest"]] = BlobInfo(layer["digest"], layer["size"], now)
        with self._uploads_lock:
            uploads = [info for digest, info in self._uploads.items() if digest not in named]
        yield from [*named.values(), *uploads]

    # Entries

    def put_entry(self, scope: str, key: str, manifest: bytes) -> None:
        entry_digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
        if not self.api.has_blob(entry_digest):
            self.api.upload_blob(entry_digest, manifest)
        layers = [{"mediaType": ENTRY_LAYER, "digest": entry_digest, "size": len(manifest)}]
        layers += [
            {"mediaType": BLOB_LAYER, "digest": digest, "size": size}
            for digest, size in _named_blobs(manifest).items()
        ]
        annotations = {KEY: key, SCOPE: scope, CREATED: _rfc3339(time.time())}
        what = "writing an entry"
        self._replace(_tag("e", scope, key), ENTRY_ARTIFACT, layers, annotations, what)

    def get_entry(self, scope: str, key: str) -> bytes | None:
        document = self._read_manifest(_tag("e", scope, key))
        if document is None or _where(document) != (scope, key):
            return None
        return self.api.get_blob(document["layers"][0]["digest"], "reading an entry")

    def touch_entry(self, scope: str, key: str) -> None:
        annotations = {KEY: key, SCOPE: scope, LAST_USED: _rfc3339(time.time())}
        what = "marking an entry used"
        self._replace(_tag("u", scope, key), LAST_USE_ARTIFACT, [EMPTY], annotations, what)

    def delete_entry(self, scope: str, key: str) -> None:
        for kind in "eu":
            digest = self.api.manifest_digest(_tag(kind, scope, key), "deleting an entry")
            if digest:
                self.api.delete_manifest(digest, "deleting an entry")

    def list_entries(self, scope: str | None = None) -> list[EntryInfo]:
        documents = self._read_manifests(self._tags("eu", scope))
        used = {_where(d): _time(d, LAST_USED) for tag, d in documents.items() if tag[0] == "u"}
        entries = []
        for tag, document in documents.items():
            entry_scope, key = where = _where(document)
            if tag[0] == "e" and entry_scope is not None and key is not None:
                created = _time(document, CREATED)
                size = document["layers"][0]["size"]
                last_used = max(created, used.get(where, created))
                entries.append(EntryInfo(entry_scope, key, created, last_used, size))
        return [entry for entry in entries if scope in (None, entry.scope)]

    # Concurrency and leftovers

    def lock(self, *, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return no_lock()

    def sweep(self) -> int:
        """Drop the last-use marks of deleted entries (a restore that met a prune) older
        than the grace period; the registry purges abandoned uploads itself."""
        cutoff, tags = time.time() - self.blob_grace_seconds, set(self._tags("eu", None))
        orphans = [tag for tag in tags if tag[0] == "u" and f"e{tag[1:]}" not in tags]
        marks = self._read_manifests(orphans).items()
        stale = [tag for tag, mark in marks if _time(mark, LAST_USED) < cutoff]
        for tag in stale:
            digest = self.api.manifest_digest(tag, "sweeping")
            if digest:
                self.api.delete_manifest(digest, "sweeping")
        return len(stale)

    # Tags

    def _replace(
        self,
        tag: str,
        artifact_type: str,
        layers: list[dict[str, Any]],
        annotations: dict[str, str],
        what: str,
    ) -> None:
        """Point ``tag`` at a new manifest, then delete the one it replaced, which a
        registry keeps, untagged, until a garbage collection told to drop those."""
        self._store_empty_blob()  # the config of every manifest: a registry checks it exists
        old = self.api.manifest_digest(tag, what)
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": EMPTY,
            "layers": layers,
            "annotations": annotations,
        }
        new = self.api.put_manifest(tag, document, what)
        # Safe against a writer racing us: none ever puts the manifest we saw back.
        if old and old != new:
            try:
                self.api.delete_manifest(old, what)
            except OSError as exc:  # deletes disabled: it waits for a collection
                log.debug("kept the replaced manifest of %s: %s", tag, exc)

    def _tags(self, kinds: str, scope: str | None) -> list[str]:
        """The store's tags of the given kinds (``e``, ``u``), of one scope or all."""
        label = None if scope is None else _scope_label(scope)
        found = [_TAG.fullmatch(tag) for tag in self.api.tags("listing entries")]
        return [m[0] for m in found if m and m[1] in kinds and label in (None, m[2])]

    def _read_manifests(self, tags: list[str]) -> dict[str, dict[str, Any]]:
        """Manifests by tag, read side by side; those gone meanwhile left out."""
        with ThreadPoolExecutor(LISTING_WORKERS) as pool:
            documents = list(pool.map(self._read_manifest, tags))
        return {tag: document for tag, document in zip(tags, documents) if document}  # noqa: B905

    def _read_manifest(self, tag: str) -> dict[str, Any] | None:
        """The manifest of one of the store's tags; None if absent or not the store's."""
        document = self.api.get_manifest(tag, "reading an entry")
        layers = document and document.get("layers")
        if (
            document
            and isinstance(document.get("annotations"), dict)
            and layers
            and all(
                isinstance(layer, dict)
                and DIGEST_PATTERN.fullmatch(str(layer.get("digest")))
                and type(layer.get("size")) is int
                for layer in layers
            )
        ):
            return document
        return None

    def _store_empty_blob(self) -> None:
        if not self._empty_stored and not self.api.has_blob(EMPTY_DIGEST):
            self.api.upload_blob(EMPTY_DIGEST, b"{}")
        self._empty_stored = True


def _tag(kind: str, scope: str, key: str) -> str:
    hashed = hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()[:32]
    return f"{kind}-{_scope_label(scope)}-{hashed}"


def _scope_label(scope: str) -> str:
    """The scope as tags show it: a filter only; the annotation is the truth."""
    return _NOT_IN_TAGS.sub("_", scope)[:SCOPE_IN_TAG]


def _named_blobs(manifest: bytes) -> dict[str, int]:
    try:
        return {blob.digest: blob.size for blob in Manifest.from_json(manifest).blobs}
    except CorruptDataError:
        return {}  # not the tool's JSON: stored all the same, as every backend does


def _where(document: dict[str, Any]) -> tuple[str | None, str | None]:
    scope, key = (document["annotations"].get(name) for name in (SCOPE, KEY))
    return (scope if isinstance(scope, str) else None, key if isinstance(key, str) else None)


def _rfc3339(moment: float) -> str:
    stamp = datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _time(document: dict[str, Any], name: str) -> float:
    """The annotation's time; 0 (long ago) when missing or malformed."""
    try:
        text = str(document["annotations"].get(name, "")).replace("Z", "+00:00")
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0
