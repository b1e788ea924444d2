"""The S3 store's boundary with boto3: a client made from the job's environment
mapping (endpoint, timeouts, retries), and whatever botocore or boto3 raises turned
into a one-line OSError that names the store and never a credential."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping

import boto3
from boto3.exceptions import Boto3Error
from botocore import exceptions as botocore_errors
from botocore.config import Config

from ci_integration.errors import UsageError

ENDPOINT_ENVS = ("CI_INTEGRATION_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30
# Throttling backs off up to 1+2+4+8 s over five attempts; other errors under 1 s.
MAX_ATTEMPTS = 5
# Packer threads upload side by side, a multipart upload with threads of its own.
POOL_CONNECTIONS = 32

NOT_THERE = {"NoSuchKey", "404", "NotFound"}
REFUSED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "ExpiredToken", "InvalidToken", "AllAccessDisabled"}  # fmt: skip
NO_CREDENTIALS = (botocore_errors.NoCredentialsError, botocore_errors.PartialCredentialsError)
UNREACHABLE = (botocore_errors.ConnectionError, botocore_errors.HTTPClientError)
SDK_ERRORS = (botocore_errors.BotoCoreError, botocore_errors.ClientError, Boto3Error)

_ENDPOINT = re.compile(r"https?://[^/?#@\s]+(/[^?#\s]*)?")


def endpoint_from(env: Mapping[str, str]) -> str | None:
    for name in ENDPOINT_ENVS:
        if env.get(name):
            if not _ENDPOINT.fullmatch(env[name]):
                raise UsageError(f"{name} must be http://HOST[:PORT] or https://HOST[:PORT]")
            return env[name]
    return None


def make_client(env: Mapping[str, str], endpoint: str | None):  # -> a botocore S3 client
    """A client made from the job's environment mapping, not from the process's."""
    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
        # Without a region S3 answers from us-east-1 and redirects to the bucket's.
        region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        profile_name=env.get("AWS_PROFILE") or None,
    )
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
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
    return session.client("s3", endpoint_url=endpoint, config=config, verify=ca_bundle)


def code(exc: botocore_errors.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def translated(what: str, bucket: str, where: str) -> Iterator[None]:
    try:
        yield
    except SDK_ERRORS as exc:
        raise as_os_error(exc, what, bucket, where) from exc


def as_os_error(exc: Exception, what: str, bucket: str, where: str) -> OSError:
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
            return PermissionError(f"S3 refused {what} in {where}: {error_code}; check the "
                                   "credentials and the bucket's policy")  # fmt: skip
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return OSError(f"S3 failed {what} in {where}: {error_code} (HTTP {status})")
    if isinstance(exc, NO_CREDENTIALS):
        return PermissionError(f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID "
                               "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")  # fmt: skip
    if isinstance(exc, UNREACHABLE):
        return ConnectionError(f"S3 did not answer {what} in {where} "
                               f"({type(exc).__name__}, {MAX_ATTEMPTS} attempts)")  # fmt: skip
    return OSError(f"S3 failed {what} in {where}: {type(exc).__name__}")
