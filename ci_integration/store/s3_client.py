"""The S3 store's boundary with boto3: a client made from the job's environment
mapping (endpoint, timeouts, retries), and whatever botocore or boto3 raises turned
into a one-line OSError that names the store and never a credential."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore import exceptions as botocore_errors
from botocore.config import Config

from ci_integration.errors import UsageError
from ci_integration.store import retry

ENDPOINT_ENVS = ("CI_INTEGRATION_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
READ_TIMEOUT_SECONDS = 30.0  # the longest wait for a byte; retry.TIMEOUT_ENV sets it
# The retry policy is retry.py's, not botocore's (which waits for no Retry-After but
# its own header, and lets a hang cost every attempt a whole read timeout). Besides
# HTTP statuses, S3 names what is worth another attempt with these codes:
RETRY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
    }
)
# Packer threads upload side by side, a multipart upload with threads of its own.
POOL_CONNECTIONS = 32

NOT_THERE = {"NoSuchKey", "404", "NotFound"}
REFUSED = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
}
NO_CREDENTIALS = (botocore_errors.NoCredentialsError, botocore_errors.PartialCredentialsError)
UNREACHABLE = (botocore_errors.ConnectionError, botocore_errors.HTTPClientError)
TIMED_OUT = (botocore_errors.ReadTimeoutError, botocore_errors.ConnectTimeoutError)
SDK_ERRORS = (botocore_errors.BotoCoreError, botocore_errors.ClientError, Boto3Error)

_ENDPOINT = re.compile(r"https?://[^/?#@\s]+(/[^?#\s]*)?")


def endpoint_from(env: Mapping[str, str]) -> str | None:
    for name in ENDPOINT_ENVS:
        if env.get(name):
            if not _ENDPOINT.fullmatch(env[name]):
                raise UsageError(f"{name} must be http://HOST[:PORT] or https://HOST[:PORT]")
            return env[name]
    return None


def make_client(env: Mapping[str, str], endpoint: str | None) -> Any:  # a botocore S3 client
    """A client made from the job's environment mapping, not from the process's."""
    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
        # Without a region S3 answers from us-east-1 and redirects to the bucket's.
        region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        profile_name=env.get("AWS_PROFILE") or None,
    )
    connect_timeout, read_timeout = retry.timeouts(env, READ_TIMEOUT_SECONDS)
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": 1},  # retry_delay decides
        max_pool_connections=POOL_CONNECTIONS,
        # Other S3 services seldom serve BUCKET.HOST names; AWS prefers them.
        s3={"addressing_style": "path" if endpoint else "auto"},
        # The endpoint is the mapping's; botocore must not find one elsewhere.
        ignore_configured_endpoint_urls=True,
        # Blobs are checked against their sha256 when read, and some S3-compatible
        # services refuse the checksum trailers botocore sends by default.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    ca_bundle = env.get("AWS_CA_BUNDLE") or None
    client = session.client("s3", endpoint_url=endpoint, config=config, verify=ca_bundle)
    policy = RetryPolicy()
    client.meta.events.register_first("needs-retry.s3", policy.retry_delay)
    client.meta.events.register_first("before-send.s3", policy.refuse_once_given_up)
    return client


class GaveUp(ConnectionError):
    """A request after one that exhausted its retries: not sent."""


class RetryPolicy:
    """botocore's needs-retry hook, for one client. Once a request has used up its
    attempts the client gives up: later requests fail at once, so a save of many
    blobs costs one request's retries, not one a blob."""

    def __init__(self) -> None:
        self.gave_up = ""

    def refuse_once_given_up(self, **kwargs: Any) -> None:
        if self.gave_up:
            raise GaveUp(f"S3 stopped answering: {self.gave_up}; not tried again")

    def retry_delay(
        self,
        attempts: int,
        response: Any = None,  # botocore's (http response, parsed) or None
        caught_exception: Exception | None = None,
        request_dict: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> float | None:
        """Seconds to wait before attempt ``attempts + 1``, or None to give up. Called
        after every attempt; botocore's own policy, given one attempt, says None."""
        if isinstance(caught_exception, GaveUp):
            return None
        delay = self._delay(attempts, response, caught_exception, request_dict or {})
        if delay is None and (isinstance(caught_exception, UNREACHABLE) or _retryable(response)):
            failed = type(caught_exception).__name__ if caught_exception else _status(response)
            self.gave_up = f"{failed} after {attempts} attempts"
        return delay

    def _delay(
        self,
        attempts: int,
        response: Any,
        caught_exception: Exception | None,
        request_dict: dict[str, Any],
    ) -> float | None:
        if attempts >= retry.MAX_ATTEMPTS:
            return None
        if caught_exception is not None:
            if isinstance(caught_exception, TIMED_OUT):
                context = request_dict.setdefault("context", {})
                timeouts = context["ci_integration_timeouts"] = (
                    context.get("ci_integration_timeouts", 0) + 1
                )
                if timeouts >= retry.MAX_TIMEOUTS:
                    return None
            if isinstance(caught_exception, UNREACHABLE):
                return retry.backoff(attempts)
            return None
        if not _retryable(response):
            return None
        return retry.wait_after_refusal(attempts, response[0].headers)


def _retryable(response: tuple[Any, object] | None) -> bool:
    if response is None:
        return False
    http, parsed = response
    error_code = str(parsed.get("Error", {}).get("Code", "")) if isinstance(parsed, dict) else ""
    return http.status_code in retry.RETRY_STATUSES or error_code in RETRY_CODES


def _status(response: tuple[Any, object]) -> str:
    return f"HTTP {response[0].status_code}"


def code(exc: botocore_errors.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def translated(what: str, bucket: str, where: str) -> Iterator[None]:
    try:
        yield
    except SDK_ERRORS as exc:
        raise as_os_error(exc, what, bucket, where) from exc


def as_os_error(exc: BaseException, what: str, bucket: str, where: str) -> OSError:
    """One line naming the store (``where``), never a credential: botocore's own
    messages may quote what the request carried, so they are left out."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, Boto3Error) and cause is not None:
        exc = cause  # boto3's transfer errors wrap the service's answer
    if isinstance(exc, botocore_errors.ClientError):
        error_code = code(exc)
        if error_code == "NoSuchBucket":
            return FileNotFoundError(f"S3 bucket {bucket!r} does not exist ({where})")
        if error_code in REFUSED:
            return PermissionError(
                f"S3 refused {what} in {where}: {error_code}; check the "
                "credentials and the bucket's policy"
            )
        metadata = exc.response.get("ResponseMetadata", {})
        status, retries = metadata.get("HTTPStatusCode", "?"), metadata.get("RetryAttempts", 0)
        tried = f", {retries + 1} attempts" if retries else ""
        return OSError(f"S3 failed {what} in {where}: {error_code} (HTTP {status}{tried})")
    if isinstance(exc, NO_CREDENTIALS):
        return PermissionError(
            f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        )
    if isinstance(exc, TIMED_OUT):
        return ConnectionError(
            f"S3 did not answer {what} in {where} ({type(exc).__name__}, "
            f"no answer in time, {retry.MAX_TIMEOUTS} attempts)"
        )
    if isinstance(exc, UNREACHABLE):
        attempts = retry.MAX_ATTEMPTS
        return ConnectionError(
            f"S3 did not answer {what} in {where} ({type(exc).__name__}, {attempts} attempts)"
        )
    return OSError(f"S3 failed {what} in {where}: {type(exc).__name__}")
