"""The S3 store (``s3://BUCKET/PREFIX``): any S3-compatible service, shared by every
machine that reaches it. Layout under the prefix::

    blobs/sha256/HEX              one object a blob
    entries/SCOPE/KEY.json        one object an entry (the key percent-encoded)
    entries/SCOPE/KEY.used        empty; its LastModified is the entry's last use

An entry is one PutObject, which S3 shows whole or not at all. Use never rewrites
it: ``created`` is its LastModified, ``last_used`` the later of it and the sidecar's
(whole seconds, as S3 keeps them: entries of the same second tie).

There is no lock: a prune meets running saves. It deletes a blob only if no entry
it listed names it and the blob is older than ``blob_grace_seconds``. So a blob a
save uploaded, or found with ``has_blob`` (which copies a blob older than
REFRESH_AFTER_SECONDS onto itself, renewing its age), survives if the save commits
within the grace period. A piece a save reuses from an earlier entry, unlooked-up,
survives while that entry does: prune evicts the least recently used first and a
job's restore marks its entry used, so it goes only if --max-age is shorter than a
job or --max-size holds less than one job uses. Left: a blob deleted between prune
listing and deleting it. A lost blob makes its entry a miss with a warning (every
blob is checked), never wrong files. Clocks are assumed within minutes of S3's.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore import exceptions as botocore_errors

from ci_integration.store import retry
from ci_integration.store.base import (
    REMOTE_COMPRESSION_LEVEL,
    BlobInfo,
    BlobNotFound,
    EntryInfo,
    no_lock,
)
from ci_integration.store.s3_client import (
    NOT_THERE,
    code,
    endpoint_from,
    make_client,
    translated,
)

# Below this a blob is one PutObject (S3 takes 5 GB so); parts only add requests.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024
# download_fileobj would retry a cut body too, but a HEAD and a thread pool a blob
# halve the rate of a restore.
BODY_ATTEMPTS = 3
GRACE_SECONDS = 3600.0
REFRESH_AFTER_SECONDS = 600.0

_HEX = re.compile(r"[0-9a-f]{64}")
# Streaming errors, read timeouts and closed connections are all HTTPClientErrors.
_BODY_CUT = (botocore_errors.HTTPClientError, botocore_errors.IncompleteReadError)


class S3Store:
    blob_grace_seconds = GRACE_SECONDS
    compression_level = REMOTE_COMPRESSION_LEVEL
    multipart_threshold = MULTIPART_THRESHOLD

    def __init__(self, bucket: str, prefix: str, env: Mapping[str, str]) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint = endpoint_from(env)
        with self._translated("opening the store"):
            self._client = make_client(env, self.endpoint)

    @property
    def description(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    # Blobs

    def _blob_key(self, digest: str) -> str:
        return f"{self.prefix}blobs/sha256/{digest.removeprefix('sha256:')}"

    def has_blob(self, digest: str) -> bool:
        key = self._blob_key(digest)
        with self._translated("looking up a blob"):
            try:
                head = self._client.head_object(Bucket=self.bucket, Key=key)
                if time.time() - head["LastModified"].timestamp() > REFRESH_AFTER_SECONDS:
                    # A copy onto itself is S3's one way to renew an object's age.
                    source = {"Bucket": self.bucket, "Key": key}
                    self._client.copy(
                        source,
                        self.bucket,
                        key,
                        {"MetadataDirective": "REPLACE"},
                        Config=self._transfer(),
                    )
            except botocore_errors.ClientError as exc:
                if code(exc) in NOT_THERE:
                    return False
                raise
        return True

    def put_blob(self, digest: str, data: bytes) -> None:
        key = self._blob_key(digest)
        with self._translated("uploading a blob"):
            if len(data) < self.multipart_threshold:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
            else:
                stream = io.BytesIO(data)
                self._client.upload_fileobj(stream, self.bucket, key, Config=self._transfer())

    def get_blob(self, digest: str) -> bytes:
        data = self._read(self._blob_key(digest), "downloading a blob")
        if data is None:
            raise BlobNotFound(digest)
        return data

    def delete_blob(self, digest: str) -> None:
        self._delete(self._blob_key(digest), "deleting a blob")

    def list_blobs(self) -> Iterator[BlobInfo]:
        for item in self._list(f"{self.prefix}blobs/sha256/", "listing blobs"):
            name = item["Key"].rpartition("/")[2]
            if _HEX.fullmatch(name):
                yield BlobInfo("sha256:" + name, item["Size"], item["LastModified"].timestamp())

    # Entries

    def _entry_key(self, scope: str, key: str, suffix: str = "json") -> str:
        return f"{self.prefix}entries/{scope}/{urllib.parse.quote(key, safe='')}.{suffix}"

    def put_entry(self, scope: str, key: str, manifest: bytes) -> None:
        with self._translated("writing an entry"):
            self._client.put_object(
                Bucket=self.bucket,
                Key=self._entry_key(scope, key),
                Body=manifest,
                ContentType="application/json",
            )

    def get_entry(self, scope: str, key: str) -> bytes | None:
        return self._read(self._entry_key(scope, key), "reading an entry")

    def touch_entry(self, scope: str, key: str) -> None:
        with self._translated("marking an entry used"):
            sidecar = self._entry_key(scope, key, "used")
            self._client.put_object(Bucket=self.bucket, Key=sidecar, Body=b"")

    def delete_entry(self, scope: str, key: str) -> None:
        self._delete(self._entry_key(scope, key), "deleting an entry")
        self._delete(self._entry_key(scope, key, "used"), "deleting an entry")

    def list_entries(self, scope: str | None = None) -> list[EntryInfo]:
        found = self._entry_objects(scope)
        entries = []
        for (scope_name, key, suffix), (created, size) in found.items():
            if suffix == "json":
                used = found.get((scope_name, key, "used"), (created,))[0]
                entries.append(EntryInfo(scope_name, key, created, max(created, used), size))
        return entries

    def _entry_objects(self, scope: str | None) -> dict[tuple[str, str, str], tuple[float, int]]:
        """(LastModified, size) of entries and their sidecars, by (scope, key, suffix)."""
        root = f"{self.prefix}entries/"
        found = {}
        for item in self._list(root + (f"{scope}/" if scope else ""), "listing entries"):
            scope_name, _, name = item["Key"][len(root) :].partition("/")
            stem, _, suffix = name.rpartition(".")
            where = (scope_name, urllib.parse.unquote(stem), suffix)
            found[where] = (item["LastModified"].timestamp(), item["Size"])
        return found

    # Concurrency and leftovers

    def lock(self, *, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return no_lock()

    def sweep(self) -> int:
        """Abort multipart uploads, and drop the last-use marks of deleted entries (a
        restore that met a prune), older than the grace period."""
        cutoff = time.time() - self.blob_grace_seconds
        removed = 0
        with self._translated("sweeping"):
            paginator = self._client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < cutoff:
                        with contextlib.suppress(botocore_errors.ClientError):  # done meanwhile
                            self._client.abort_multipart_upload(
                                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                            )
                            removed += 1
        found = self._entry_objects(None)
        for (scope, key, suffix), (last_use, _) in found.items():
            if suffix == "used" and (scope, key, "json") not in found and last_use < cutoff:
                self._delete(self._entry_key(scope, key, "used"), "sweeping")
                removed += 1
        return removed

    # Requests, their errors as one-line OSErrors

    def _transfer(self) -> TransferConfig:
        chunk = min(MULTIPART_CHUNK, max(self.multipart_threshold, 5 * 1024 * 1024))
        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=chunk,
            preferred_transfer_client="classic",
        )

    def _read(self, key: str, what: str) -> bytes | None:
        """The object's bytes, None if there is none. A body cut off mid-read is
        fetched again: botocore retries requests, not the reading of a body."""
        timeouts = 0
        with self._translated(what):
            for attempt in range(1, BODY_ATTEMPTS + 1):
                try:
                    response = self._client.get_object(Bucket=self.bucket, Key=key)
                except botocore_errors.ClientError as exc:
                    if code(exc) in NOT_THERE:
                        return None
                    raise
                try:
                    body: bytes = response["Body"].read()
                    return body
                except _BODY_CUT as exc:
                    # A body that stopped coming costs a whole read timeout a time.
                    timeouts += isinstance(exc, botocore_errors.ReadTimeoutError)
                    if attempt == BODY_ATTEMPTS or timeouts == retry.MAX_TIMEOUTS:
                        raise
        return None

    def _delete(self, key: str, what: str) -> None:
        with self._translated(what):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def _list(self, prefix: str, what: str) -> Iterator[dict[str, Any]]:
        with self._translated(what):
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    def _translated(self, what: str) -> contextlib.AbstractContextManager[None]:
        return translated(what, self.bucket, self.description)
