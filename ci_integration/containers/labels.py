"""The labels on every container the tool starts: whose it is, so that the janitor
can tell later whether its build is over, and never touch anyone else's."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping

from ci_integration import __version__
from ci_integration.containers.owner import Host, Owner
from ci_integration.context import CIContext

PREFIX = "io.ci-integration."
TOOL = PREFIX + "tool"
TOOL_NAME = "ci-integration"
VERSION = PREFIX + "version"
PROVIDER = PREFIX + "provider"
JOB = PREFIX + "job"
BUILD = PREFIX + "build"
BUILD_URL = PREFIX + "build-url"
REPOSITORY = PREFIX + "repository"
HOST = PREFIX + "host"
PID_NAMESPACE = PREFIX + "pid-namespace"
OWNER_PID = PREFIX + "owner-pid"
OWNER_START = PREFIX + "owner-start-ticks"
STARTED = PREFIX + "started"
KEEP = PREFIX + "keep"

# What the engine is asked to list: only containers carrying this are ever looked at.
OURS_FILTER = f"{TOOL}={TOOL_NAME}"


def container_labels(
    job: CIContext, owner: Owner, started: datetime.datetime, *, keep: bool
) -> dict[str, str]:
    labels = {
        TOOL: TOOL_NAME,
        VERSION: __version__,
        PROVIDER: job.provider.value,
        HOST: owner.host.name,
        PID_NAMESPACE: owner.host.pid_namespace,
        OWNER_PID: str(owner.pid),
        STARTED: started.astimezone(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if owner.start_ticks is not None:
        labels[OWNER_START] = str(owner.start_ticks)
    optional = {
        JOB: job.job_name,
        BUILD: job.build_id,
        BUILD_URL: job.build_url,
        REPOSITORY: job.repository,
    }
    labels.update({name: value for name, value in optional.items() if value})
    if keep:
        labels[KEEP] = "true"
    return labels


def is_ours(labels: Mapping[str, str]) -> bool:
    return labels.get(TOOL) == TOOL_NAME


def is_kept(labels: Mapping[str, str]) -> bool:
    return labels.get(KEEP) == "true"


def owner_of(labels: Mapping[str, str]) -> Owner:
    """The owner recorded on a container; fields that are missing or malformed make
    an owner that no host recognises, so it is never judged by its pid."""
    pid = _int(labels.get(OWNER_PID)) or 0
    host = Host(labels.get(HOST, ""), labels.get(PID_NAMESPACE, ""))
    return Owner(host, pid, _int(labels.get(OWNER_START)))


@dataclasses.dataclass(frozen=True)
class Build:
    """The CI build a container belongs to, as its labels name it."""

    provider: str
    job: str
    number: str
    url: str
    repository: str

    @classmethod
    def of(cls, labels: Mapping[str, str]) -> Build:
        return cls(
            labels.get(PROVIDER, ""),
            labels.get(JOB, ""),
            labels.get(BUILD, ""),
            labels.get(BUILD_URL, ""),
            labels.get(REPOSITORY, ""),
        )

    def describe(self) -> str:
        name = self.job or self.repository or self.provider or "unknown job"
        return f"{name} #{self.number}" if self.number else name


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
