"""One repository of an OCI registry through the distribution API (spec v1.1): blobs
(look up, fetch, upload in one PUT or in chunks, delete), manifests by tag or by
digest, and the tag list page by page. The answers are checked here; HTTP, auth and
retries are registry_client's."""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from typing import Any

import requests

from ci_integration.store.registry_client import RegistryClient

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# Below this a blob is one PUT; above, PATCHes of UPLOAD_CHUNK (a proxy's body limit).
CHUNKED_UPLOAD_THRESHOLD = 64 * 1024 * 1024
UPLOAD_CHUNK = 16 * 1024 * 1024
TAGS_PAGE_SIZE = 100  # some registries refuse larger pages
MAX_TAG_PAGES = 10_000

_OCTETS = {"Content-Type": "application/octet-stream"}
_ACCEPT = {"Accept": OCI_MANIFEST}


class Repository:
    chunked_upload_threshold = CHUNKED_UPLOAD_THRESHOLD
    upload_chunk = UPLOAD_CHUNK
    tags_page_size = TAGS_PAGE_SIZE

    def __init__(self, client: RegistryClient, name: str) -> None:
        self.client = client
        self.path = f"/v2/{name}"

    # Blobs

    def has_blob(self, digest: str) -> bool:
        # A HEAD is not followed: a redirect to storage already says the blob is there.
        found = self.client.request(
            "HEAD", f"{self.path}/blobs/{digest}", "looking up a blob", expect=range(200, 400)
        )
        return found is not None

    def get_blob(self, digest: str, what: str = "downloading a blob") -> bytes | None:
        found = self.client.request("GET", f"{self.path}/blobs/{digest}", what, expect=(200,))
        return None if found is None else found.content

    def upload_blob(self, digest: str, data: bytes) -> None:
        try:
            self._upload(digest, data)
        except ConnectionError:
            raise
        except OSError:
            # A commit whose answer was lost fails when retried: the upload is gone.
            if not self.has_blob(digest):
                raise

    def delete_blob(self, digest: str) -> None:
        self.client.request(
            "DELETE", f"{self.path}/blobs/{digest}", "deleting a blob", expect=(202,)
        )

    def _upload(self, digest: str, data: bytes) -> None:
        what, request = "uploading a blob", self.client.request
        started = request("POST", f"{self.path}/blobs/uploads/", what, expect=(202,), absent=())
        location = _location(started, what)
        if len(data) >= self.chunked_upload_threshold:
            for start in range(0, len(data), self.upload_chunk):
                chunk = data[start : start + self.upload_chunk]
                span = {"Content-Range": f"{start}-{start + len(chunk) - 1}"}
                sent = request(
                    "PATCH",
                    location,
                    what,
                    expect=(202,),
                    absent=(),
                    data=chunk,
                    headers={**_OCTETS, **span},
                )
                location = _location(sent, what)
            data = b""
        request(
            "PUT",
            _with_query(location, digest=digest),
            what,
            expect=(201,),
            absent=(),
            data=data,
            headers=_OCTETS,
        )

    # Manifests and tags

    def get_manifest(self, reference: str, what: str) -> dict[str, Any] | None:
        url = f"{self.path}/manifests/{reference}"
        found = self.client.request("GET", url, what, expect=(200,), headers=_ACCEPT)
        return None if found is None else _json(found, what)

    def manifest_digest(self, reference: str, what: str) -> str | None:
        url = f"{self.path}/manifests/{reference}"
        found = self.client.request("HEAD", url, what, expect=(200,), headers=_ACCEPT)
        if found is not None and "Docker-Content-Digest" in found.headers:
            return found.headers["Docker-Content-Digest"]
        if found is not None:  # the header is a SHOULD: hash the manifest instead
            found = self.client.request("GET", url, what, expect=(200,), headers=_ACCEPT)
        return None if found is None else f"sha256:{hashlib.sha256(found.content).hexdigest()}"

    def put_manifest(self, tag: str, document: dict[str, Any], what: str) -> str:
        """Tag the manifest; returns its digest.

        A DIGEST_INVALID answer is tried again: the digests are this tool's own, and
        distribution (2.8 at least) gives it when another job's upload of a blob the
        manifest names rewrites that blob's link file while the PUT reads it."""
        body = json.dumps(document, separators=(",", ":")).encode()
        url, headers = f"{self.path}/manifests/{tag}", {"Content-Type": OCI_MANIFEST}
        self.client.request(
            "PUT",
            url,
            what,
            expect=(201,),
            absent=(),
            data=body,
            headers=headers,
            transient_codes=("DIGEST_INVALID",),
        )
        return f"sha256:{hashlib.sha256(body).hexdigest()}"

    def delete_manifest(self, digest: str, what: str) -> None:
        """Registries delete manifests by digest, which also drops the tags on it."""
        self.client.request("DELETE", f"{self.path}/manifests/{digest}", what, expect=(202,))

    def tags(self, what: str) -> list[str]:
        """Every tag, page by page as the Link headers lead (a registry may send all in one)."""
        tags: list[str] = []
        url = f"{self.path}/tags/list?n={self.tags_page_size}"
        for _ in range(MAX_TAG_PAGES):
            found = self.client.request("GET", url, what, expect=(200,))
            if found is None:
                return tags  # NAME_UNKNOWN: nothing was ever pushed here
            tags += [str(tag) for tag in _json(found, what).get("tags") or []]
            next_page = found.links.get("next", {}).get("url")
            if not next_page:
                return tags
            url = urllib.parse.urljoin(found.url, next_page)
        raise OSError(f"the tag list of {self.client.where} did not end in {MAX_TAG_PAGES} pages")


def _json(response: requests.Response, what: str) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise OSError(f"the registry gave no JSON object for {what}")
    return document


def _location(response: requests.Response | None, what: str) -> str:
    if response is None or not response.headers.get("Location"):
        raise OSError(f"the registry gave no upload location for {what}")
    return response.headers["Location"]


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = "&".join(part for part in (parts.query, urllib.parse.urlencode(params)) if part)
    return urllib.parse.urlunsplit(parts._replace(query=query))
