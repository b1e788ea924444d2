"""Cache stores: where blobs and entries live. ``open_store`` picks the backend by URL;
``job_view`` is the store as one job sees it."""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ci_integration.errors import UsageError
from ci_integration.store.base import Store
from ci_integration.store.journal import Journal, state_dir
from ci_integration.store.local import LocalStore
from ci_integration.store.scoped import ScopedStore

if TYPE_CHECKING:
    from ci_integration.context import CIContext

__all__ = [
    "ScopedStore",
    "Store",
    "default_store_dir",
    "default_store_url",
    "job_view",
    "open_store",
]

log = logging.getLogger(__name__)

STORE_ENV = "CI_INTEGRATION_STORE"
CACHE_MODE_ENV = "ACTIONS_CACHE_MODE"  # GitHub's: a job that may only read or only write
CACHE_DIR_ENV = "CI_INTEGRATION_CACHE_DIR"
# As botocore checks them; the service itself may be stricter.
_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")
# As the distribution spec has them.
_REGISTRY_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::[0-9]{1,5})?")
_REPOSITORY_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_REPOSITORY_PART}(?:/{_REPOSITORY_PART})*")
# Also an Ant pattern for archiveArtifacts: no wildcard, comma or space.
_FOLDER_PART = r"(?!\.\.?(?:/|$))[A-Za-z0-9._-]+"  # not . nor ..
_WORKSPACE_FOLDER = re.compile(rf"{_FOLDER_PART}(?:/{_FOLDER_PART})*")


def default_store_dir(env: Mapping[str, str]) -> Path:
    """$CI_INTEGRATION_CACHE_DIR, else $XDG_CACHE_HOME/ci-integration, else ~/.cache/..."""
    if env.get(CACHE_DIR_ENV):
        return Path(env[CACHE_DIR_ENV])
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "ci-integration"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".cache" / "ci-integration"
    raise UsageError(f"no cache location: set {CACHE_DIR_ENV} or pass --store file://DIR")


def open_store(
    url: str | None,
    env: Mapping[str, str],
    job_context: Callable[[], CIContext] | None = None,
) -> Store:
    """The store named by ``url`` (else $CI_INTEGRATION_STORE, else the local default),
    said once in the log. ``job_context`` gives the job's CI context, which the
    jenkins:// store needs to know which builds to read."""
    store = _open(url, env, job_context)
    log.info("cache store: %s", store.description)
    return store


def default_store_url(env: Mapping[str, str]) -> str:
    """The store a command uses without --store: $CI_INTEGRATION_STORE, else the GitHub
    Actions cache where the job has its service (the actions hand it over), else a
    folder of this machine. The actions pass their store input on and decide nothing."""
    if env.get(STORE_ENV):
        return env[STORE_ENV]
    from ci_integration.store.gha.service import unavailable

    if unavailable(env) is None:
        return "gha://"
    if env.get("GITHUB_ACTIONS") == "true":
        log.info(
            "no GitHub Actions cache service in this step: caching in a local folder, which"
            " only a self-hosted runner keeps (the actions hand the service over; or pass"
            " --store)"
        )
    return "file://" + urllib.parse.quote(str(default_store_dir(env).absolute()))


def _open(
    url: str | None, env: Mapping[str, str], job_context: Callable[[], CIContext] | None
) -> Store:
    url = url or default_store_url(env)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise UsageError(f"bad store URL {url!r}: write file:///absolute/path")
        return LocalStore(Path(urllib.parse.unquote(parsed.path)))
    if not parsed.scheme:
        return LocalStore(Path(url).expanduser().absolute())
    if parsed.scheme == "s3":
        return _s3_store(url, env)
    if parsed.scheme == "oci":
        return _oci_store(url, env)
    if parsed.scheme == "gha":
        if url != "gha://":
            raise UsageError(f"bad store URL {_safe(url)}: the GitHub Actions cache is gha://")
        from ci_integration.store.gha.store import GhaStore

        return GhaStore(env)
    if parsed.scheme == "jenkins":
        return _jenkins_store(url, env, job_context)
    raise UsageError(
        f"unsupported store URL scheme {parsed.scheme!r} in {_safe(url)}: "
        "use file://DIR, s3://BUCKET/PREFIX, oci://HOST/REPOSITORY, gha:// or jenkins://"
    )


def job_view(
    store: Store,
    env: Mapping[str, str],
    scope_chain: Sequence[str],
    read_only_because: str = "",
) -> ScopedStore:
    """``store`` as a job sees it: its scope chain, read-only where the job is (for
    ``read_only_because``, or by $ACTIONS_CACHE_MODE), and its restores remembered (so
    a later save of the job references their pieces whatever its key)."""
    journal = Journal(state_dir(env), store.description)
    mode = env.get(CACHE_MODE_ENV, "").strip().lower().replace("_", "-")
    if mode not in ("", "read-write", "read-only", "read", "write-only", "write"):
        raise UsageError(
            f"{CACHE_MODE_ENV} is {mode[:40]!r}: it may be read-only, write-only or read-write"
        )
    mode_read_only = mode in ("read-only", "read")
    write_only = mode in ("write-only", "write")
    reasons = [read_only_because] if read_only_because else []
    if mode_read_only or write_only:
        reasons.append(f"{CACHE_MODE_ENV} is {mode}")
    read_only = bool(read_only_because) or mode_read_only
    why = "; ".join(reasons)
    return ScopedStore(
        store, scope_chain, read_only=read_only, write_only=write_only, why=why, journal=journal
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


def _oci_store(url: str, env: Mapping[str, str]) -> Store:
    parsed = urllib.parse.urlsplit(url)
    # The login comes from the docker config: a URL is printed in logs.
    if "@" in parsed.netloc or parsed.query or parsed.fragment:
        raise UsageError(
            f"bad store URL {_safe(url)}: write oci://HOST/REPOSITORY, the login "
            "in the docker config (docker login HOST)"
        )
    repository = parsed.path.strip("/")
    if not _REGISTRY_HOST.fullmatch(parsed.netloc) or not _REPOSITORY.fullmatch(repository):
        raise UsageError(
            f"bad store URL {_safe(url)}: write oci://HOST[:PORT]/REPOSITORY, the "
            "repository in lowercase letters, digits, . _ - and /"
        )
    from ci_integration.store.oci import OCIStore

    return OCIStore(parsed.netloc, repository, env)


def _jenkins_store(
    url: str, env: Mapping[str, str], job_context: Callable[[], CIContext] | None
) -> Store:
    parsed = urllib.parse.urlsplit(url)
    folder = parsed.path.removeprefix("/") or None
    if (
        not url.startswith("jenkins://")
        or parsed.netloc
        or parsed.query
        or parsed.fragment
        or (folder is not None and not _WORKSPACE_FOLDER.fullmatch(folder))
    ):
        raise UsageError(
            f"bad store URL {_safe(url)}: write jenkins:// or jenkins:///FOLDER, "
            "FOLDER inside the workspace (letters, digits, . _ - and /)"
        )
    if not env.get("WORKSPACE"):
        raise UsageError("the jenkins:// store writes into the build's workspace: no WORKSPACE")
    if job_context is None:
        raise TypeError("the jenkins:// store is opened for a job: pass its context")
    from ci_integration.store.jenkins import DEFAULT_FOLDER, JenkinsStore
    from ci_integration.store.jenkins_client import JenkinsClient
    from ci_integration.store.jenkins_jobs import jobs_by_scope

    # The job's scope chain decides which jobs are read.
    job = job_context()
    client = JenkinsClient(env["JENKINS_URL"], env) if env.get("JENKINS_URL") else None
    return JenkinsStore(
        Path(env["WORKSPACE"]), folder or DEFAULT_FOLDER, job.scope, jobs_by_scope(job, env), client
    )


def _safe(url: str) -> str:
    """The URL without credentials or query, fit for an error message."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    return urllib.parse.urlunsplit((parsed.scheme, host, parsed.path, "", ""))
