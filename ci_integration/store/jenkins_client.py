"""HTTP to a Jenkins controller, for the jenkins:// store: a job's last successful
build (pinned by number), a build's artifact list and an artifact's bytes, through
the remote stores' shared transport (store/http.py): one session with Basic auth
(JENKINS_USER and JENKINS_TOKEN, an API token), timeouts and bounded retries on
every request; failures are one-line OSErrors that name the controller and never
the user's token. A controller that stopped answering is not asked again by the
same process: each later call fails at once.

Jenkins' remote access API (https://www.jenkins.io/doc/book/using/remote-access-api/):
``job/A/job/B/lastSuccessfulBuild/api/json?tree=number`` and
``job/A/job/B/N/api/json?tree=artifacts[relativePath]`` answer JSON, and
``job/A/job/B/N/artifact/PATH`` the archived file (or a redirect to an artifact
manager's storage, which gets no Authorization header from requests).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping

import requests

from ci_integration.store.http import Transport
from ci_integration.store.jenkins_jobs import job_url_path

READ_TIMEOUT_SECONDS = 30.0  # retry.TIMEOUT_ENV sets it


@dataclasses.dataclass(frozen=True)
class Build:
    job: str  # the full name, as in JOB_NAME
    number: int


class JenkinsClient:
    def __init__(self, url: str, env: Mapping[str, str]) -> None:
        parsed = urllib.parse.urlsplit(url)
        # Never a login from the URL, nor the URL's login in a message.
        netloc = parsed.hostname or ""
        if parsed.port:
            netloc += f":{parsed.port}"
        self.base = urllib.parse.urlunsplit(
            (parsed.scheme, netloc, parsed.path.rstrip("/") + "/", "", "")
        )
        self.where = f"Jenkins at {self.base}"
        refused = "set JENKINS_USER and JENKINS_TOKEN (an API token) of a user who may read the job"
        self.transport = Transport(
            "Jenkins",
            env,
            refused=refused,
            secrets=[env.get("JENKINS_TOKEN", "")],
            read_timeout=READ_TIMEOUT_SECONDS,
        )
        if env.get("JENKINS_USER") and env.get("JENKINS_TOKEN"):
            self.transport.session.auth = (env["JENKINS_USER"], env["JENKINS_TOKEN"])

    def last_successful(self, job: str) -> Build | None:
        """The job's last successful build, or None when the job has none (or no such job)."""
        document = self._json(
            f"{job_url_path(job)}lastSuccessfulBuild/api/json?tree=number",
            f"reading the last successful build of {job}",
        )
        if document is None:
            return None
        number = document.get("number") if isinstance(document, dict) else None
        if not isinstance(number, int) or isinstance(number, bool):
            raise OSError(f"{self.where} gave no build number for {job}")
        return Build(job, number)

    def artifacts(self, build: Build) -> list[str]:
        """The relative paths of the build's archived files."""
        what = f"listing the artifacts of {build.job} #{build.number}"
        path = f"{job_url_path(build.job)}{build.number}/api/json?tree=artifacts[relativePath]"
        document = self._json(path, what)
        if document is None:
            return []
        items = document.get("artifacts") if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise OSError(f"{self.where} gave no artifact list for {build.job} #{build.number}")
        paths = [item.get("relativePath") for item in items if isinstance(item, dict)]
        return [path for path in paths if isinstance(path, str)]

    def artifact(self, build: Build, relative_path: str) -> bytes | None:
        """The archived file's bytes, or None when the build has no such file."""
        path = (
            f"{job_url_path(build.job)}{build.number}/artifact/"
            f"{urllib.parse.quote(relative_path, safe='/')}"
        )
        response = self._get(path, f"downloading {relative_path} of {build.job} #{build.number}")
        return None if response is None else response.content

    def _json(self, path: str, what: str) -> object:
        response = self._get(path, what)
        if response is None:
            return None
        try:
            return response.json()
        except ValueError:
            raise OSError(f"{self.where}: {what} gave no JSON") from None

    def _get(self, path: str, what: str) -> requests.Response | None:
        """The answer when 200, None when 404; anything else raises a one-line OSError."""
        # Redirects followed: an artifact manager's storage (no Authorization goes there).
        response = self.transport.request(
            "GET", self.base + path, what, passed={404}, follow_redirects=True
        )
        return None if response.status_code == 404 else response
