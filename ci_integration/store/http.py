"""HTTP for the remote stores' clients (the GitHub cache service, Azure Blob storage,
GitHub's REST API, Jenkins): one session, timeouts, the retry policy of the service (a 429
after its Retry-After, capped), a host given up once it answers nothing at all, and
one-line OSErrors that name a host and what was being done. Never a URL in a
message: the cache service's download and upload URLs are signed, and their query
string is a secret; nor a token.
"""

from __future__ import annotations

import concurrent.futures
import re
import time
import urllib.parse
from collections.abc import Callable, Collection, Mapping, Sequence

import requests

from ci_integration.store import retry

READ_TIMEOUT_SECONDS = 60.0  # retry.TIMEOUT_ENV sets it
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
        policy: retry.Policy = retry.DEFAULT,
        secrets: Sequence[str] = (),
        refusals: Mapping[str, str] | None = None,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self.timeout = retry.timeouts(env, read_timeout)
        self.refused = refused
        self.policy = policy
        self.secrets = [secret for secret in secrets if secret]
        # The service's own words for a refusal (lower case) -> what they mean to a user.
        self.refusals = dict(refusals or {})
        self.sleep = sleep or _sleep
        # Hosts that failed a request through all its attempts while no other request
        # to them succeeded (or that asked for a longer wait than we make): later
        # requests fail at once, so a dead service costs one request's retries, not one
        # for each of a job's hundred blobs; a blip among successes gives up nothing.
        self.unreachable: dict[str, str] = {}
        self._last_success: dict[str, float] = {}
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
        started = time.monotonic()
        timeout = retry.for_body(self.timeout, data)
        try:
            response, attempts = retry.send(
                self.session,
                method,
                url,
                timeout=timeout,
                policy=self.policy,
                sleep=self.sleep,
                headers=headers,
                json=json,
                data=data,
                allow_redirects=follow_redirects,
            )
        except retry.Unanswered as exc:
            self._give_up(host, started, exc.cause)
            raise OSError(f"{where}: {what} failed: {exc.cause}") from None
        except requests.RequestException as exc:
            raise OSError(f"{where}: {what} failed: {type(exc).__name__}") from None
        status = response.status_code
        if status < 300 or status in passed:
            self._last_success[host] = time.monotonic()
            return response
        if status in retry.RETRY_STATUSES:
            self._give_up(host, started, f"HTTP {status}")
        raise self._failure(response, f"{where}: {what} failed", attempts.failures)

    def _give_up(self, host: str, started: float, cause: str) -> None:
        """Give the host up unless another request to it succeeded meanwhile."""
        if self._last_success.get(host, -1.0) < started:
            self.unreachable[host] = f"{cause}, given up for this job"

    def _failure(self, response: requests.Response, prefix: str, attempts: int) -> OSError:
        status = response.status_code
        tries = f", {attempts} attempts" if attempts > 1 else ""
        if attempts == 1 and status in retry.RETRY_STATUSES:
            tries = f", Retry-After {response.headers.get('Retry-After')} s is too long"
        detail = server_message(response)
        for secret in self.secrets:
            detail = detail.replace(secret, "***")
        meaning = explain(detail, self.refusals)
        if meaning:
            return PermissionError(f"{prefix}: HTTP {status}, {meaning}")
        if status in (401, 403):
            return PermissionError(f"{prefix}: HTTP {status}, {self.refused}{tries}")
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


def explain(message: str, refusals: Mapping[str, str]) -> str | None:
    """What a service's refusal means, when its message holds words we know."""
    lowered = message.lower()
    for words, meaning in refusals.items():
        if words in lowered:
            return meaning
    return None


def ranged(start: int, length: int | None) -> dict[str, str]:
    """The Range header asking for ``length`` bytes from ``start`` (none for all)."""
    if length is None:
        return {}
    return {"Range": f"bytes={start}-{start + length - 1}"}


def range_of(response: requests.Response, start: int, length: int | None, where: str) -> bytes:
    """The bytes asked for: a 206's body, or the part of a whole body a server that
    ignores Range sent; a short answer is an OSError (it is retried as a miss)."""
    body = response.content
    if length is None:
        return body
    if response.status_code != 206:
        body = body[start : start + length]
    if len(body) != length:
        raise OSError(f"{where}: {len(body)} of {length} bytes came back")
    return body


def parallel(tasks: Sequence[Callable[[], None]], workers: int) -> None:
    """Run ``tasks`` in ``workers`` threads; the first failure is raised, once every
    task has ended (none is left running behind the caller)."""
    if len(tasks) <= 1 or workers <= 1:
        for task in tasks:
            task()
        return
    with concurrent.futures.ThreadPoolExecutor(workers, "ci-integration-upload") as pool:
        futures = [pool.submit(task) for task in tasks]
        errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def http_url(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")
