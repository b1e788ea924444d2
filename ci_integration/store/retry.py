"""The one retry policy of the remote stores' clients (S3, registry, GitHub cache,
Jenkins): how long to wait for an answer, which failures to try again, how often,
and how long to wait in between.

A job must never hang on its cache. So a request is tried at most MAX_ATTEMPTS
times, backing off 0.5, 1, 2 s, each up to half again at random so that a save's
parallel uploads do not retry in step (or what a 429 or 503's Retry-After asks, when
that is at most MAX_RETRY_AFTER_SECONDS: a longer wait is not made and the request
fails at once); a service that let one request time out twice is down, not busy, and is
not asked again in this job. The worst a dead service costs one job is then two
read timeouts, ``CI_INTEGRATION_STORE_TIMEOUT`` seconds each.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import requests
import requests.adapters
import urllib3.exceptions

from ci_integration import __version__
from ci_integration.errors import UsageError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "CI_INTEGRATION_STORE_TIMEOUT"
CONNECT_TIMEOUT_SECONDS = 5.0
MAX_ATTEMPTS = 4
MAX_TIMEOUTS = 2
MAX_RETRY_AFTER_SECONDS = 10.0
JITTER = 0.5  # a backoff is stretched by up to this share of itself
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class Policy:
    """How one kind of service is tried again: ``attempts`` in all, waits growing from
    ``first_wait`` by ``factor`` up to ``max_wait``, and the longest Retry-After made."""

    attempts: int = MAX_ATTEMPTS
    first_wait: float = 0.5
    factor: float = 2.0
    max_wait: float = 30.0
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS


DEFAULT = Policy()
# As GitHub's own client (@actions/cache) treats the cache service: 5 attempts, 3 s
# growing by 1.5 times; its limits are per minute, so a Retry-After of a minute is made.
GITHUB_CACHE = Policy(attempts=5, first_wait=3.0, factor=1.5, max_retry_after=60.0)
# As Azure's storage SDK (which that client uploads with): 4 tries, 4 s doubling,
# at most 120 s apart.
AZURE_STORAGE = Policy(
    attempts=4, first_wait=4.0, factor=2.0, max_wait=120.0, max_retry_after=120.0
)

# What requests raises when a service cannot be reached or stops mid-answer.
UNREACHABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
# requests raises a timeout met while reading a body as a ConnectionError.
_READ_TIMEOUTS = (requests.Timeout, urllib3.exceptions.ReadTimeoutError)


def read_timeout(env: Mapping[str, str], default: float) -> float:
    """Seconds to wait for a byte of an answer: ``TIMEOUT_ENV`` or ``default``."""
    text = env.get(TIMEOUT_ENV, "").strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise UsageError(f"{TIMEOUT_ENV} must be a number of seconds (0 < s <= 3600)")
    return seconds


def timeouts(env: Mapping[str, str], default_read: float) -> tuple[float, float]:
    """(connect, read) timeouts for requests."""
    read = read_timeout(env, default_read)
    return min(CONNECT_TIMEOUT_SECONDS, read), read


# A body over this is sent under the read timeout, not the connect timeout.
LARGE_BODY_BYTES = 1024 * 1024


def for_body(timeout: tuple[float, float], body: object) -> tuple[float, float]:
    """The timeouts of a request sending ``body``. urllib3 sends a body under the
    connect timeout: a large part, to a receiver that stalls a few seconds while it
    stores the last one, gets the read timeout instead."""
    if isinstance(body, (bytes, bytearray, memoryview)) and len(body) > LARGE_BODY_BYTES:
        return timeout[1], timeout[1]
    return timeout


def session(env: Mapping[str, str], *, pool_connections: int) -> requests.Session:
    """A requests session as every store's client needs one: the job's mapping (never
    this process's environment) decides, a private CA from ``REQUESTS_CA_BUNDLE`` or
    ``SSL_CERT_FILE``, a pool for the packer's threads."""
    made = requests.Session()
    made.trust_env = False
    made.verify = env.get("REQUESTS_CA_BUNDLE") or env.get("SSL_CERT_FILE") or True
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=pool_connections)
    made.mount("https://", adapter)
    made.mount("http://", adapter)
    made.headers["User-Agent"] = f"ci-integration/{__version__}"
    return made


class Unanswered(Exception):
    """The service was not reached, or stopped answering, through a request's attempts."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(cause)


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    timeout: tuple[float, float],
    policy: Policy = DEFAULT,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> tuple[requests.Response, Attempts]:
    """The first answer not worth another attempt (it may be an error status: the
    caller judges it), and the attempts it took. Unanswered when every attempt met a
    lost connection or a timeout; any other failure of requests as it is."""
    attempts = Attempts(policy)
    host = urllib.parse.urlsplit(url).netloc  # never the URL: a signed one is a secret
    while True:
        try:
            response = session.request(method, url, timeout=timeout, **kwargs)
        except UNREACHABLE as exc:
            wait = attempts.after_exception(exc)
            if wait is None:
                raise Unanswered(attempts.describe(exc, timeout[1])) from None
            log.debug(
                "%s to %s: attempt %d failed (%s), again in %.1f s",
                method,
                host,
                attempts.failures,
                _cause(exc),
                wait,
            )
            sleep(wait)
            continue
        wait = attempts.after_status(response.status_code, response.headers)
        if wait is None:
            return response, attempts
        log.debug(
            "%s to %s: attempt %d answered HTTP %d, again in %.1f s",
            method,
            host,
            attempts.failures,
            response.status_code,
            wait,
        )
        sleep(wait)


def _cause(exc: BaseException) -> str:
    """The innermost reason of a requests failure, by type (its text may quote a URL)."""
    inner: BaseException | None = exc
    names: list[str] = []
    while inner is not None and len(names) < 4:
        names.append(type(inner).__name__)
        args = getattr(inner, "args", ())
        nested = [arg for arg in args if isinstance(arg, BaseException)]
        reason = getattr(inner, "reason", None)
        inner = nested[0] if nested else reason if isinstance(reason, BaseException) else None
    return " < ".join(names)


def backoff(failures: int, policy: Policy = DEFAULT) -> float:
    """The wait after the ``failures``-th failed attempt (by default 0.5, 1, 2 s),
    stretched by up to JITTER of itself."""
    base = min(policy.first_wait * policy.factor ** (failures - 1), policy.max_wait)
    return base * (1 + random.uniform(0, JITTER))


def wait_after_refusal(
    failures: int, headers: Mapping[str, str], policy: Policy = DEFAULT
) -> float | None:
    """The wait after the ``failures``-th refusal (429, 5xx...): the backoff, or what
    the service asked when that is longer; None when the attempts are used up or it
    asked for more than the policy's ``max_retry_after``."""
    asked = retry_after(headers)
    if failures >= policy.attempts or asked > policy.max_retry_after:
        return None
    return max(asked, backoff(failures, policy))


def retry_after(headers: Mapping[str, str]) -> float:
    """Seconds the service asked to wait: Retry-After (seconds or an HTTP date), or
    AWS's x-amz-retry-after (milliseconds); 0 when it asked nothing it could mean."""
    try:
        if headers.get("x-amz-retry-after"):
            return max(float(headers["x-amz-retry-after"]) / 1000, 0.0)
        value = (headers.get("Retry-After") or "").strip()
        if not value:
            return 0.0
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value).timestamp()
            return max(when - time.time(), 0.0)
    except (TypeError, ValueError):
        return 0.0


def timed_out(exc: BaseException) -> bool:
    cause = exc.args[0] if exc.args else None
    return isinstance(exc, _READ_TIMEOUTS) or isinstance(cause, _READ_TIMEOUTS)


class Attempts:
    """One request's attempts under ``policy``: after each failure, how long to wait
    before the next one, or None to give up."""

    def __init__(self, policy: Policy = DEFAULT) -> None:
        self.policy = policy
        self.failures = 0
        self.timeouts = 0

    def after_exception(self, exc: BaseException) -> float | None:
        self.failures += 1
        self.timeouts += timed_out(exc)
        if self.failures >= self.policy.attempts or self.timeouts >= MAX_TIMEOUTS:
            return None
        return backoff(self.failures, self.policy)

    def after_status(
        self, status: int, headers: Mapping[str, str], *, transient: bool = False
    ) -> float | None:
        """None also for an answer that is not worth another attempt: one whose status
        is not in RETRY_STATUSES, unless the caller knows it ``transient``."""
        if status not in RETRY_STATUSES and not transient:
            return None
        self.failures += 1
        return wait_after_refusal(self.failures, headers, self.policy)

    def describe(self, exc: BaseException, read_timeout_seconds: float) -> str:
        """Why the request was given up, for a one-line message (never a URL: a signed
        one is a secret, and requests' own text quotes it)."""
        if self.timeouts:
            cause = f"no answer within {read_timeout_seconds:g} s"
        elif isinstance(exc, requests.ConnectTimeout):
            cause = f"no connection within {CONNECT_TIMEOUT_SECONDS:g} s"
        elif isinstance(exc, requests.ConnectionError):
            cause = "cannot connect or the connection broke"
        else:
            cause = type(exc).__name__
        return f"{cause}, {self.failures} attempts"
