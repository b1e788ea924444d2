"""The GitHub Actions cache service a job can reach, behind one small interface: look
a key up, store bytes under a new key, download what a lookup found (or a range of
it). Two protocols implement it, picked from the job's environment: v2 (twirp calls
to the results service, bytes in Azure Blob storage; github.com) where
ACTIONS_CACHE_SERVICE_V2 is true, else v1 (``_apis/artifactcache``; GitHub
Enterprise Server, act).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Protocol

CACHE_URL_ENV = "ACTIONS_CACHE_URL"
RESULTS_URL_ENV = "ACTIONS_RESULTS_URL"
TOKEN_ENV = "ACTIONS_RUNTIME_TOKEN"
V2_ENV = "ACTIONS_CACHE_SERVICE_V2"
EXPORT_HINT = (
    "GitHub gives the cache service's variables to JavaScript actions only: run the "
    "project's actions/export-cache-env action in the job first (its own actions do)"
)


# What the service says when it refuses for a reason other than the token.
REFUSALS = {
    "cache read denied": "this job may not read the cache (refused by the repository's or "
    "organisation's policy): restoring nothing",
    "cache write denied": "this job may not write to the cache (refused by the repository's "
    "or organisation's policy): saving nothing",
    "insufficient usage": "the repository's cache storage is over its limit (GitHub's "
    "usage and billing settings): saving nothing",
}


class Conflict(Exception):
    """The key is taken: committed already, or reserved by an upload under way."""


@dataclasses.dataclass(frozen=True)
class Found:
    key: str  # as the service returns it: lower case on some servers
    location: str  # where to download from; a secret (a signed URL) on GitHub


class Payload(Protocol):
    """Bytes to upload, read a part at a time (a bundle lives in a temp file)."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class InMemory:
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


class CacheService(Protocol):
    host: str  # the service's host, for log lines
    protocol: str  # "v1" or "v2"

    def lookup(self, key: str, version: str) -> Found | None:
        """The entry whose key is ``key``, else the newest committed one starting with it."""

    def store(self, key: str, version: str, payload: Payload) -> None:
        """A new committed entry; Conflict when the service already holds ``key``."""

    def download(self, found: Found, start: int = 0, length: int | None = None) -> bytes:
        """The entry's bytes, or ``length`` of them from ``start``."""


def uses_v2(env: Mapping[str, str]) -> bool:
    return env.get(V2_ENV, "").strip().lower() in ("true", "1")


def unavailable(env: Mapping[str, str]) -> str | None:
    """Why this job cannot reach its cache service, or None if it can."""
    url_name = RESULTS_URL_ENV if uses_v2(env) else CACHE_URL_ENV
    missing = [name for name in (url_name, TOKEN_ENV) if not env.get(name)]
    if missing:
        names = " or ".join(missing)
        version = " (v2)" if uses_v2(env) else ""
        return (
            f"the GitHub Actions cache service{version} is not available: no {names}; {EXPORT_HINT}"
        )
    if urllib.parse.urlsplit(env[url_name]).scheme not in ("http", "https"):
        return f"{url_name} is not an http(s) URL"
    return None


def connect(
    env: Mapping[str, str], *, sleep: Callable[[float], None] | None = None
) -> CacheService:
    """The job's cache service. Connecting never fails: a job without one gets a
    service whose every call raises OSError saying why (cache trouble is a warning)."""
    if uses_v2(env):
        from ci_integration.store.gha.v2 import TwirpCacheClient

        return TwirpCacheClient(env, sleep=sleep)
    from ci_integration.store.gha.v1 import CacheClient

    return CacheClient(env, sleep=sleep)
