"""The GitHub Actions cache service's v2 protocol, as github.com serves it: three twirp
calls (JSON over POST) to ``$ACTIONS_RESULTS_URL/twirp/github.actions.results.api.v1.
CacheService/``, the bytes themselves to and from Azure Blob storage URLs the service
signs.

- CreateCacheEntry {key, version} -> {ok, signed_upload_url}: 409 (twirp
  ``already_exists``) when the key is taken; ``ok: false`` with a message when the
  token may not write (a read-only job).
- FinalizeCacheEntryUpload {key, version, size_bytes} -> {ok, entry_id}: only then
  does the entry exist for lookups.
- GetCacheEntryDownloadURL {key, restore_keys, version} -> {ok, signed_download_url,
  matched_key}: the exact key, else the newest entry starting with a restore key;
  ``ok: false`` is a miss.

The service never overwrites a key. Signed URLs are secrets: none reaches a message.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ci_integration.store import retry
from ci_integration.store.gha.azure_blob import REFUSED as STORAGE_REFUSED
from ci_integration.store.gha.azure_blob import SERVICE_NAME as STORAGE_NAME
from ci_integration.store.gha.azure_blob import AzureBlob
from ci_integration.store.gha.service import (
    REFUSALS,
    RESULTS_URL_ENV,
    TOKEN_ENV,
    Conflict,
    Found,
    Payload,
    unavailable,
)
from ci_integration.store.http import Transport, explain, http_url

if TYPE_CHECKING:
    import requests

SERVICE = "github.actions.results.api.v1.CacheService"
SERVICE_NAME = "GitHub cache service"
REFUSED = "the token was refused (it is valid for its own job only)"


class TwirpCacheClient:
    protocol = "v2"

    def __init__(self, env: Mapping[str, str], *, sleep: Callable[[float], None] | None = None):
        self.problem = unavailable(env)
        base = env.get(RESULTS_URL_ENV, "")
        self.host = urllib.parse.urlsplit(base).netloc or "nowhere"
        # As GitHub's own client does: the service's path replaces any in the URL.
        self.base = urllib.parse.urljoin(base, f"/twirp/{SERVICE}/")
        token = env.get(TOKEN_ENV, "")
        self.transport = Transport(
            SERVICE_NAME,
            env,
            refused=REFUSED,
            policy=retry.GITHUB_CACHE,
            secrets=[token],
            refusals=REFUSALS,
            sleep=sleep,
        )
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        storage = Transport(
            STORAGE_NAME, env, refused=STORAGE_REFUSED, policy=retry.AZURE_STORAGE, sleep=sleep
        )
        self.blobs = AzureBlob(storage)

    def lookup(self, key: str, version: str) -> Found | None:
        request = {"key": key, "restore_keys": [key], "version": version}
        response = self._call("GetCacheEntryDownloadURL", request, "looking up a key", {404})
        answer = _document(response) if response.status_code != 404 else {}
        if not answer.get("ok"):
            return None
        url = str(_field(answer, "signed_download_url") or "")
        matched = str(_field(answer, "matched_key") or "")
        if not http_url(url) or not matched:
            raise OSError(f"the GitHub cache service at {self.host} gave a bad download location")
        return Found(matched, url)

    def store(self, key: str, version: str, payload: Payload) -> None:
        request = {"key": key, "version": version}
        response = self._call("CreateCacheEntry", request, "reserving a key", {409})
        if response.status_code == 409:
            raise Conflict(key)
        answer = _document(response)
        url = str(_field(answer, "signed_upload_url") or "")
        if not answer.get("ok"):
            message = " ".join(str(answer.get("message") or "").split())[:200]
            if not message:
                raise Conflict(key)  # what GitHub's own client takes it for
            meaning = explain(message, REFUSALS)
            if meaning:
                raise PermissionError(f"the GitHub cache service at {self.host}: {meaning}")
            raise OSError(f"the GitHub cache service at {self.host} refused the key: {message}")
        if not http_url(url):
            raise OSError(f"the GitHub cache service at {self.host} gave a bad upload location")
        self.blobs.upload(url, payload)
        request = {"key": key, "version": version, "size_bytes": str(payload.size)}
        answer = _document(self._call("FinalizeCacheEntryUpload", request, "committing an upload"))
        if not answer.get("ok"):
            message = " ".join(str(answer.get("message") or "").split())[:200]
            raise OSError(
                f"the GitHub cache service at {self.host} did not commit the upload"
                + (f": {message}" if message else "")
            )

    def download(self, found: Found, start: int = 0, length: int | None = None) -> bytes:
        return self.blobs.download(found.location, start, length)

    def _call(
        self, method: str, request: dict[str, Any], what: str, passed: set[int] | None = None
    ) -> requests.Response:
        if self.problem:
            raise OSError(self.problem)
        return self.transport.request(
            "POST",
            self.base + method,
            what,
            headers=self._headers,
            json=request,
            passed=passed or (),
        )


def _document(response: requests.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _field(document: dict[str, Any], name: str) -> object:
    """A field by its proto name, or by the lowerCamelCase name proto3 JSON also allows."""
    if name in document:
        return document[name]
    head, *rest = name.split("_")
    return document.get(head + "".join(part.title() for part in rest))
