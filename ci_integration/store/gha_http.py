"""HTTP for the GitHub cache store: one session, timeouts, bounded retries (a 429
after its Retry-After, capped) and one-line OSErrors that name a host and what was
being done. Never a URL in a message: the cache service's download and upload URLs
are signed, and their query string is a secret; nor the runtime token.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping, Sequence

import requests
import requests.adapters

from ci_integration import __version__

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 60
ATTEMPTS = 5
MAX_RETRY_AFTER_SECONDS = 60.0
# The packer uploads from several threads at once.
POOL_CONNECTIONS = 16
RETRIED = {429, 500, 502, 503, 504}
# Azure storage answers in XML: its error code is safe to show, its message may
# quote the string it signed.
_XML_CODE = re.compile(r"<Code>([A-Za-z0-9]{1,80})</Code>")


class Transport:
    """Requests to one kind of server: ``name`` says which in messages ("GitHub cache
    service"), ``refused`` what a 401 or 403 means there."""

    def __init__(
        self,
        name: str,
        *,
        refused: str,
        secrets: Sequence[str] = (),
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self.refused = refused
        self.secrets = [secret for secret in secrets if secret]
        self.sleep = sleep or _sleep
        # Hosts that could not be reached through a request's every attempt: later
        # requests fail at once, so a dead service costs one request's retries, not
        # one for each of a job's hundred blobs.
        self.unreachable: dict[str, str] = {}
        self.session = requests.Session()
        self.session.trust_env = False  # the job's env mapping decides, not os.environ
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_CONNECTIONS)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = f"ci-integration/{__version__}"

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
        for attempt in range(1, ATTEMPTS + 1):
            last = attempt == ATTEMPTS
            try:
                response = self.session.request(
                    method, url, headers=headers, json=json, data=data,
                    allow_redirects=follow_redirects,
                    timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
                )  # fmt: skip
            except requests.RequestException as exc:
                if last:
                    reason = f"{_reason(exc)} ({attempt} attempts)"
                    if isinstance(exc, requests.ConnectionError):
                        self.unreachable[host] = f"{reason}, given up for this job"
                    raise OSError(f"{where}: {what} failed: {reason}") from None
                self.sleep(_backoff(attempt))
                continue
            status = response.status_code
            if status < 300 or status in passed:
                return response
            if status not in RETRIED or last:
                raise self._failure(response, f"{where}: {what} failed", attempt)
            wait = _backoff(attempt)
            if status == 429:
                wait = _retry_after(response.headers.get("Retry-After"), wait)
                log.info("the %s asks to slow down: waiting %.0f s", self.name, wait)
            self.sleep(wait)
        raise AssertionError("unreachable")

    def _failure(self, response: requests.Response, prefix: str, attempt: int) -> OSError:
        status = response.status_code
        tries = f", {attempt} attempts" if attempt > 1 else ""
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


def _reason(exc: requests.RequestException) -> str:
    # str(exc) can quote the URL, and a signed URL is a secret: name the kind only.
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT_SECONDS} s"
    if isinstance(exc, requests.ReadTimeout):
        return f"no answer within {READ_TIMEOUT_SECONDS} s"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect or the connection broke"
    return type(exc).__name__


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _backoff(attempt: int) -> float:
    return float(2 ** (attempt - 1)) + random.uniform(0, 0.5)


def _retry_after(value: str | None, default: float) -> float:
    """Seconds to wait: the header's seconds or date, capped; ``default`` without one."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def http_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")
