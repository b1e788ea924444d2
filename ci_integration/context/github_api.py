"""Asks GitHub whether a workflow run still runs, through PyGithub.

``GET {GITHUB_API_URL}/repos/OWNER/REPO`` (once per repository), then
``GET {GITHUB_API_URL}/repos/OWNER/REPO/actions/runs/RUN_ID`` answers the run, whose
``status`` is ``completed`` once it is over, and ``queued``, ``in_progress``,
``waiting``, ``requested`` or ``pending`` before that (REST API, "Get a workflow
run": https://docs.github.com/rest/actions/workflow-runs#get-a-workflow-run).
"""

from __future__ import annotations

import github
import requests

from ci_integration.errors import BuildStatusUnavailable

API_TIMEOUT = 10
DEFAULT_SERVER_URL = "https://github.com"
DEFAULT_API_URL = "https://api.github.com"


class GitHubRuns:
    def __init__(
        self,
        server_url: str,
        api_url: str,
        token: str | None,
        *,
        timeout: float = API_TIMEOUT,
    ) -> None:
        self.server_url = server_url.rstrip("/") + "/"
        self.url = api_url.rstrip("/")
        self._repositories: dict[str, github.Repository.Repository] = {}
        auth = github.Auth.Token(token) if token else None
        # No retries: an unreachable API means "judge by age", not a minute of backoff.
        self.client = github.Github(auth=auth, base_url=self.url, timeout=int(timeout), retry=None)

    def close(self) -> None:
        self.client.close()

    def serves(self, build_url: str) -> bool:
        """Only runs of this server are asked about: the token is for it alone."""
        return build_url.startswith(self.server_url)

    def build_is_running(self, repository: str, run_id: str) -> bool:
        if "/" not in repository or not run_id.isdigit():
            raise BuildStatusUnavailable(f"no repository and run id to ask about ({repository!r})")
        try:
            if repository not in self._repositories:
                self._repositories[repository] = self.client.get_repo(repository)
            status = self._repositories[repository].get_workflow_run(int(run_id)).status
        except github.GithubException as exc:
            data = exc.data if isinstance(exc.data, dict) else {}
            message = exc.message or data.get("message") or "no message"
            raise BuildStatusUnavailable(
                f"GitHub at {self.url} answered {exc.status}: {message}"
            ) from None
        except requests.RequestException as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BuildStatusUnavailable(
                f"GitHub at {self.url}: {reason}", unreachable=True
            ) from None
        if not isinstance(status, str):
            raise BuildStatusUnavailable(f"GitHub gave no status for run {run_id}")
        return status != "completed"
