"""Cache stores: where blobs and entries live. ``open_store`` picks the backend by URL."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from ci_integration.errors import UsageError
from ci_integration.store.base import Store
from ci_integration.store.local import LocalStore

__all__ = ["Store", "default_store_dir", "open_store"]

STORE_ENV = "CI_INTEGRATION_STORE"
CACHE_DIR_ENV = "CI_INTEGRATION_CACHE_DIR"
# As botocore checks them; the service itself may be stricter.
_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")


def default_store_dir(env: Mapping[str, str]) -> Path:
    """$CI_INTEGRATION_CACHE_DIR, else $XDG_CACHE_HOME/ci-integration, else ~/.cache/..."""
    if env.get(CACHE_DIR_ENV):
        return Path(env[CACHE_DIR_ENV])
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "ci-integration"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".cache" / "ci-integration"
    raise UsageError(f"no cache location: set {CACHE_DIR_ENV} or pass --store file://DIR")


def open_store(url: str | None, env: Mapping[str, str]) -> Store:
    """The store named by ``url`` (else $CI_INTEGRATION_STORE, else the local default)."""
    url = url or env.get(STORE_ENV) or ""
    if not url:
        return LocalStore(default_store_dir(env))
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise UsageError(f"bad store URL {url!r}: write file:///absolute/path")
        return LocalStore(Path(urllib.parse.unquote(parsed.path)))
    if not parsed.scheme:
        return LocalStore(Path(url).expanduser().absolute())
    if parsed.scheme == "s3":
        return _s3_store(url, env)
    raise UsageError(
        f"unsupported store URL scheme {parsed.scheme!r} in {_safe(url)}: "
        "use file://DIR or s3://BUCKET/PREFIX"
    )


def _s3_store(url: str, env: Mapping[str, str]) -> Store:
    parsed = urllib.parse.urlsplit(url)
    # Credentials come from the AWS variables: a URL is printed in logs.
    if parsed.username or parsed.password or parsed.query or parsed.fragment:
        raise UsageError(
            f"bad store URL {_safe(url)}: write s3://BUCKET/PREFIX, credentials in AWS_*"
        )
    if not _BUCKET.fullmatch(parsed.netloc):
        raise UsageError(f"bad store URL {_safe(url)}: no bucket name in s3://BUCKET/PREFIX")
    try:
        from ci_integration.store.s3 import S3Store  # boto3 is the optional extra "s3"
    except ImportError:
        raise UsageError("the S3 store needs boto3: pip install 'ci-integration[s3]'") from None
    return S3Store(parsed.netloc, urllib.parse.unquote(parsed.path), env)


def _safe(url: str) -> str:
    """The URL without credentials or query, fit for an error message."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    return urllib.parse.urlunsplit((parsed.scheme, host, parsed.path, "", ""))
