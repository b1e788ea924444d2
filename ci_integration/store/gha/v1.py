"""The GitHub Actions cache service's v1 protocol (``_apis/artifactcache``), as act and
GitHub Enterprise Server serve it inside a job: look a key up, reserve one, upload
its bytes in chunks, commit, and download from the location a lookup gives.

Requests, retries and error messages are store.http's: never the token, and never a
download URL, which carries a signature on GitHub.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ci_integration.store import retry
from ci_integration.store.gha.service import (
    CACHE_URL_ENV,
    REFUSALS,
    TOKEN_ENV,
    Conflict,
    Found,
    Payload,
    unavailable,
)
from ci_integration.store.http import Transport, http_url, parallel, range_of, ranged

if TYPE_CHECKING:
    import requests

ACCEPT = "application/json;api-version=6.0-preview.1"
# As the official client: chunks of 32 MiB, four at a time.
CHUNK_BYTES = 32 * 1024 * 1024
UPLOAD_WORKERS = 4
SERVICE_NAME = "GitHub cache service"
REFUSED = "the token was refused (it is valid for its own job only)"


class CacheClient:
    protocol = "v1"

    def __init__(self, env: Mapping[str, str], *, sleep: Callable[[float], None] | None = None):
        self.problem = unavailable(env)
        base = env.get(CACHE_URL_ENV, "")
        self.base = base.rstrip("/") + "/_apis/artifactcache/"
        self.host = urllib.parse.urlsplit(base).netloc or "nowhere"
        self._token = env.get(TOKEN_ENV, "")
        self.transport = Transport(
            SERVICE_NAME,
            env,
            refused=REFUSED,
            policy=retry.GITHUB_CACHE,
            secrets=[self._token],
            refusals=REFUSALS,
            sleep=sleep,
        )
        self._headers = {"Accept": ACCEPT, "Authorization": f"Bearer {self._token}"}

    def lookup(self, key: str, version: str) -> Found | None:
        query = urllib.parse.urlencode({"keys": key, "version": version})
        response = self._call("GET", f"cache?{query}", "looking up a key")
        if response.status_code == 204:
            return None
        try:
            document = response.json()
            found = Found(str(document["cacheKey"]), str(document["archiveLocation"]))
        except (ValueError, KeyError, TypeError):
            return None
        if not http_url(found.location):
            raise OSError(f"the GitHub cache service at {self.host} gave a bad download location")
        return found

    def store(self, key: str, version: str, payload: Payload) -> None:
        cache_id = self._reserve(key, version, payload.size)

        def upload(start: int) -> None:
            chunk = payload.read(start, min(CHUNK_BYTES, payload.size - start))
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {start}-{start + len(chunk) - 1}/*",
            }
            self._call("PATCH", f"caches/{cache_id}", "uploading", data=chunk, headers=headers)

        starts = range(0, payload.size, CHUNK_BYTES)
        parallel([functools.partial(upload, start) for start in starts], UPLOAD_WORKERS)
        self._call(
            "POST", f"caches/{cache_id}", "committing an upload", json={"size": payload.size}
        )

    def download(self, found: Found, start: int = 0, length: int | None = None) -> bytes:
        # Without the token: the location is another service (Azure storage on GitHub).
        response = self.transport.request(
            "GET",
            found.location,
            "downloading",
            headers=ranged(start, length),
            follow_redirects=True,
        )
        return range_of(response, start, length, f"{self.transport.name} at {self.host}")

    def _reserve(self, key: str, version: str, size: int) -> int:
        document = {"key": key, "version": version, "cacheSize": size}
        response = self._call("POST", "caches", "reserving a key", json=document, passed={409})
        if response.status_code == 409:
            raise Conflict(key)
        try:
            cache_id = int(response.json()["cacheId"])
        except (ValueError, KeyError, TypeError):
            raise Conflict(key) from None  # what older servers answer for a taken key
        if cache_id < 0:
            raise Conflict(key)
        return cache_id

    def _call(
        self,
        method: str,
        resource: str,
        what: str,
        *,
        json: object = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        passed: set[int] | None = None,
    ) -> requests.Response:
        if self.problem:
            raise OSError(self.problem)
        return self.transport.request(
            method,
            self.base + resource,
            what,
            headers={**self._headers, **(headers or {})},
            json=json,
            data=data,
            passed=passed or (),
        )
