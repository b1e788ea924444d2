"""Asks a Jenkins server whether a build still runs, through python-jenkins.

``GET {JENKINS_URL}job/NAME/NUMBER/api/json`` answers a build's JSON, in which
``building`` is true while it runs (Jenkins' remote access API:
https://www.jenkins.io/doc/book/using/remote-access-api/). Folders and
multibranch jobs are ``a/b/c`` in JOB_NAME; python-jenkins turns that into
``job/a/job/b/job/c``.
"""

from __future__ import annotations

import jenkins
import requests

from ci_integration.errors import BuildStatusUnavailable

API_TIMEOUT = 10


class JenkinsBuilds:
    def __init__(
        self, url: str, user: str | None, token: str | None, *, timeout: float = API_TIMEOUT
    ) -> None:
        self.url = url.rstrip("/") + "/"
        self.server = jenkins.Jenkins(self.url, username=user, password=token, timeout=timeout)

    def serves(self, build_url: str) -> bool:
        """Only builds of this server are asked about: the credentials are for it alone."""
        return build_url.startswith(self.url)

    def build_is_running(self, job_name: str, number: str) -> bool:
        if not job_name or not number.isdigit():
            raise BuildStatusUnavailable(
                f"no job name and build number to ask about ({job_name!r})"
            )
        try:
            info = self.server.get_build_info(job_name, int(number))
        except (jenkins.JenkinsException, requests.RequestException) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            unreachable = isinstance(
                exc, (requests.ConnectionError, requests.Timeout, jenkins.TimeoutException)
            )
            raise BuildStatusUnavailable(
                f"Jenkins at {self.url}: {reason}", unreachable=unreachable
            ) from None
        building = info.get("building") if isinstance(info, dict) else None
        if not isinstance(building, bool):
            raise BuildStatusUnavailable(
                f"Jenkins at {self.url} gave no 'building' for {job_name} #{number}"
            )
        return building
