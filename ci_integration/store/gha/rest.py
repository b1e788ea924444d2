"""The repository's caches through GitHub's REST API (``/repos/{owner}/{repo}/actions/
caches``): the listing and the deletion the cache service itself cannot do. It needs a
token with ``actions: write`` in GITHUB_TOKEN (or GH_TOKEN) and the repository in
GITHUB_REPOSITORY, as a workflow step has them when it passes ``github.token``.
"""

from __future__ import annotations

import dataclasses
import datetime
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ci_integration.store import retry
from ci_integration.store.http import Transport

if TYPE_CHECKING:
    import requests

API_URL_ENV = "GITHUB_API_URL"
TOKEN_ENVS = ("GITHUB_TOKEN", "GH_TOKEN")
PAGE_SIZE = 100  # the most GitHub gives a page
MAX_PAGES = 100  # 10,000 caches: far past what 10 GB holds
NAME = "GitHub REST API"
REFUSED = "the token may not manage the repository's caches (it needs actions: write)"


@dataclasses.dataclass(frozen=True)
class CacheRow:
    id: int
    key: str
    created: float
    last_used: float
    size: int


class CachesApi:
    def __init__(self, env: Mapping[str, str], *, sleep: Callable[[float], None] | None = None):
        token = next((env[name] for name in TOKEN_ENVS if env.get(name)), "")
        repository = env.get("GITHUB_REPOSITORY", "")
        self.problem = None
        if not token or repository.count("/") != 1:
            self.problem = (
                "listing and deleting on gha:// go through GitHub's REST API: set "
                "GITHUB_TOKEN (a token with actions: write, e.g. ${{ github.token }}) "
                "and GITHUB_REPOSITORY"
            )
        base = env.get(API_URL_ENV) or "https://api.github.com"
        self.base = f"{base.rstrip('/')}/repos/{repository}/actions/caches"
        self.transport = Transport(
            NAME, env, refused=REFUSED, policy=retry.DEFAULT, secrets=[token], sleep=sleep
        )
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    def list(self, prefix: str) -> list[CacheRow]:
        """Every cache whose key starts with ``prefix``, of every ref."""
        rows: list[CacheRow] = []
        for page in range(1, MAX_PAGES + 1):
            query = urllib.parse.urlencode(
                {
                    "key": prefix,
                    "per_page": PAGE_SIZE,
                    "page": page,
                    "sort": "created_at",
                    "direction": "desc",
                }
            )
            document = self._call("GET", f"{self.base}?{query}", "listing caches").json()
            found = document.get("actions_caches") if isinstance(document, dict) else None
            if not isinstance(found, list):
                raise OSError(f"the {NAME} answered a listing that is not one")
            rows += [row for row in map(_row, found) if row and row.key.startswith(prefix)]
            if len(found) < PAGE_SIZE:
                break
        return rows

    def delete(self, cache_id: int) -> None:
        """Delete one cache; one already gone is no failure."""
        self._call("DELETE", f"{self.base}/{cache_id}", "deleting a cache", passed={404})

    def _call(
        self, method: str, url: str, what: str, passed: set[int] | None = None
    ) -> requests.Response:
        if self.problem:
            raise OSError(self.problem)
        return self.transport.request(method, url, what, headers=self._headers, passed=passed or ())


def _row(document: object) -> CacheRow | None:
    if not isinstance(document, dict):
        return None
    try:
        return CacheRow(
            int(document["id"]),
            str(document["key"]),
            _time(document["created_at"]),
            _time(document.get("last_accessed_at") or document["created_at"]),
            int(document.get("size_in_bytes") or 0),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _time(text: object) -> float:
    moment = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()
