"""HTTP for the GitHub cache store: one session, timeouts, bounded retries (a 429
after its Retry-After, capped) and one-line OSErrors that name a host and what was
being done. Never a URL in a message: the cache service's download and upload URLs
are signed, and their query string is a secret; nor the runtime token.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping, Sequence

import requests

from ci_integration.store import retry

READ_TIMEOUT_SECONDS = 60.0  # retry.TIMEOUT_ENV sets it
# GitHub counts uploads a minute: its Retry-After may ask for up to a minute, which
# is waited for (any other service's longer than retry.MAX_RETRY_AFTER_SECONDS is not).
MAX_RETRY_AFTER_SECONDS = 60.0
# The packer uploads from several threads at once.
POOL_CONNECTIONS = 16
# Azure storage answers in XML: its error code is safe to show, its message may
# quote the string it signed.
_XML_CODE = re.compile(r"<Code>([A-Za-z0-9]{1,80})</Code>")


class Transport:
    """Requests to one kind of server: ``name`` says which in messages ("GitHub cache
    service"), ``refused`` what a 401 or 403 means there."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        *,
        refused: str,
        secrets: Sequence[str] = (),
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self.timeout = retry.timeouts(env, READ_TIMEOUT_SECONDS)
        self.refused = refused
        self.secrets = [secret for secret in secrets if secret]
        self.sleep = sleep or _sleep
        # Hosts that failed a request through all its attempts (or asked for a longer
        # wait than we make): later requests fail at once, so a dead service costs one
        # request's retries, not one for each of a job's hundred blobs.
        self.unreachable: dict[str, str] = {}
        self.session = retry.session(env, pool_connections=POOL_CONNECTIONS)

    def request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: object = None,
        data: bytes | None = None,
        passed: Collection[int] = (),
        follow_redirects: bool = False,
    ) -> requests.Response:
        """The response of the first attempt that succeeds, or whose status is in
        ``passed`` (a 409 the caller understands); else an OSError after the last."""
        host = urllib.parse.urlsplit(url).netloc or "nowhere"
        where = f"{self.name} at {host}"
        if host in self.unreachable:
            raise OSError(f"{where}: {what} failed: {self.unreachable[host]}")
        try:
            response, attempts = retry.send(
                self.session, method, url, timeout=self.timeout,
                max_retry_after=MAX_RETRY_AFTER_SECONDS, sleep=self.sleep, headers=headers,
                json=json, data=data, allow_redirects=follow_redirects,
            )  # fmt: skip
        except retry.Unanswered as exc:
            self.unreachable[host] = f"{exc.cause}, given up for this job"
            raise OSError(f"{where}: {what} failed: {exc.cause}") from None
        except requests.RequestException as exc:
            raise OSError(f"{where}: {what} failed: {type(exc).__name__}") from None
        status = response.status_code
        if status < 300 or status in passed:
            return response
        if status in retry.RETRY_STATUSES:
            self.unreachable[host] = f"HTTP {status}, given up for this job"
        raise self._failure(response, f"{where}: {what} failed", attempts.failures)

    def _failure(self, response: requests.Response, prefix: str, attempts: int) -> OSError:
        status = response.status_code
        tries = f", {attempts} attempts" if attempts > 1 else ""
        if attempts == 1 and status in retry.RETRY_STATUSES:
            tries = f", Retry-After {response.headers.get('Retry-After')} s is too long"
        if status in (401, 403):
            return PermissionError(f"{prefix}: HTTP {status}, {self.refused}{tries}")
        detail = server_message(response)
        for secret in self.secrets:
            detail = detail.replace(secret, "***")
        return OSError(f"{prefix}: HTTP {status}{f' ({detail})' if detail else ''}{tries}")


def server_message(response: requests.Response) -> str:
    """The server's own one-line reason (a 400's "over the size limit"), if any: a JSON
    document's message (twirp's ``msg``), or the code of an Azure storage error."""
    text = response.text[:4000]
    found = _XML_CODE.search(text)
    if found:
        return found[1]
    try:
        document = response.json()
    except ValueError:
        return ""
    if not isinstance(document, dict):
        return ""
    message = document.get("message") or document.get("msg") or document.get("error") or ""
    return " ".join(str(message).split())[:200]


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def http_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")
