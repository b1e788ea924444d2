"""The janitor: lists the tool's containers (only those), gathers what is known about
each (does its owner run on this host, does its CI say the build runs, how old is it)
and removes those whose build is over. ``cleanup.decide`` makes every decision."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import docker

from ci_integration.containers import labels as names
from ci_integration.containers.cleanup import Facts, Policy, Verdict, decide
from ci_integration.containers.labels import Build
from ci_integration.containers.owner import Host, is_running
from ci_integration.context.github_api import DEFAULT_API_URL, DEFAULT_SERVER_URL, GitHubRuns
from ci_integration.context.jenkins_api import JenkinsBuilds
from ci_integration.engine import containers as engine_api
from ci_integration.errors import BuildStatusUnavailable, EngineError

log = logging.getLogger(__name__)

REMOVAL_WORKERS = 8


@dataclasses.dataclass
class Outcome:
    id: str
    name: str
    build: str
    age: float
    verdict: Verdict
    removed: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "build": self.build,
            "age_seconds": int(self.age),
            "remove": self.verdict.remove,
            "reason": self.verdict.reason,
            "removed": self.removed,
            "error": self.error,
        }


class BuildStatuses:
    """Asks each CI at most once per build; a server that does not answer is asked no
    more in this sweep (one warning), and its containers are judged by age."""

    def __init__(self, jenkins: JenkinsBuilds | None, github: GitHubRuns | None) -> None:
        self.jenkins = jenkins
        self.github = github
        self._known: dict[tuple[str, str, str], bool | None] = {}
        self._down: set[str] = set()
        self._unasked: set[str] = set()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BuildStatuses:
        jenkins = None
        if env.get("JENKINS_URL"):
            jenkins = JenkinsBuilds(
                env["JENKINS_URL"],
                env.get("JENKINS_USER") or None,
                env.get("JENKINS_TOKEN") or None,
            )
        github = GitHubRuns(
            env.get("GITHUB_SERVER_URL") or DEFAULT_SERVER_URL,
            env.get("GITHUB_API_URL") or DEFAULT_API_URL,
            env.get("GITHUB_TOKEN") or None,
        )
        return cls(jenkins, github)

    def close(self) -> None:
        if self.github is not None:
            self.github.close()

    def running(self, labels: Mapping[str, str]) -> bool | None:
        build = Build.of(labels)
        key = (build.provider, build.job or build.repository, build.number)
        if key not in self._known:
            self._known[key] = self._ask(build)
        return self._known[key]

    def _ask(self, build: Build) -> bool | None:
        server: JenkinsBuilds | GitHubRuns | None
        if build.provider == "jenkins":
            server, question, setting = self.jenkins, (build.job, build.number), "JENKINS_URL"
        elif build.provider == "github-actions":
            server, question = self.github, (build.repository, build.number)
            setting = "GITHUB_SERVER_URL"
        else:
            return None
        if server is None or not server.serves(build.url):
            if build.provider not in self._unasked:
                self._unasked.add(build.provider)
                log.info(
                    "not asking about %s (%s): %s does not name its server; judged by "
                    "owner and age",
                    build.describe(),
                    build.url or "no build URL",
                    setting,
                )
            return None
        if server.url in self._down:
            return None
        try:
            return server.build_is_running(*question)
        except BuildStatusUnavailable as exc:
            log.warning("%s; judging its containers by age", exc)
            if exc.unreachable:
                self._down.add(server.url)
            return None


def sweep(
    api: docker.APIClient,
    policy: Policy,
    statuses: BuildStatuses,
    *,
    dry_run: bool,
    here: Host | None = None,
    now: float | None = None,
) -> list[Outcome]:
    """Decide about every container of the tool, and remove (unless ``dry_run``) those
    whose build is over. Removal failures are recorded in the outcomes, not raised."""
    here = here or Host.here()
    now = time.time() if now is None else now
    outcomes = []
    for summary in engine_api.list_ours(api, names.OURS_FILTER):
        labels = summary.get("Labels") or {}
        age = max(now - float(summary.get("Created") or now), 0.0)
        facts = _facts(labels, age, here, statuses)
        name = (summary.get("Names") or [summary["Id"][:12]])[0].lstrip("/")
        outcome = Outcome(
            summary["Id"], name, Build.of(labels).describe(), age, decide(labels, facts, policy)
        )
        outcomes.append(outcome)
    doomed = [outcome for outcome in outcomes if outcome.verdict.remove]
    if not dry_run and doomed:
        with concurrent.futures.ThreadPoolExecutor(REMOVAL_WORKERS) as pool:
            list(pool.map(lambda outcome: _remove(api, outcome), doomed))
    return outcomes


def _facts(labels: Mapping[str, str], age: float, here: Host, statuses: BuildStatuses) -> Facts:
    """What decide() needs, asked in its order: the CI only when the owner cannot say,
    so a sweep of this host's own containers makes no API call at all."""
    if names.is_kept(labels):
        return Facts(age)
    owner_running = is_running(names.owner_of(labels), here)
    if owner_running is not None:
        return Facts(age, owner_running=owner_running)
    return Facts(age, build_running=statuses.running(labels))


def _remove(api: docker.APIClient, outcome: Outcome) -> None:
    try:
        engine_api.remove(api, outcome.id)
    except EngineError as exc:
        outcome.error = str(exc)
        log.warning("%s", exc)
    else:
        outcome.removed = True
