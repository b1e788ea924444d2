"""A loopback Jenkins for the jenkins:// store: the remote access API of jobs' last
successful builds and their archived files, on a free port of 127.0.0.1, behind
Basic auth, with faults on demand (HTTP 500s, slow answers).

A build's artifacts are the files of a workspace folder, read when asked, as
``archiveArtifacts(artifacts: 'FOLDER/**', excludes: 'FOLDER/tmp/**, FOLDER/lock')``
would have archived them; a test that writes the folder after publishing it sees
its writes served, as after archiving again. Served as Jenkins serves them:

    /job/A/job/B/lastSuccessfulBuild/api/json?tree=number   {"number": N}
    /job/A/job/B/N/api/json?tree=artifacts[relativePath]    {"artifacts": [...]}
    /job/A/job/B/N/artifact/PATH                            the file

Each URL segment is percent-decoded once into the item's name (a branch job's name
keeps its own escapes, as ``feature%2Fx``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import json
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from tests.support import loopback_http

_EXCLUDED = ("tmp/", "lock")


@dataclasses.dataclass
class Published:
    workspace: Path
    folder: str


@dataclasses.dataclass
class Front:
    url: str  # with a trailing slash, as JENKINS_URL has it
    user: str
    token: str
    # full job name -> build number -> what it archived
    builds: dict[str, dict[int, Published]] = dataclasses.field(default_factory=dict)
    requests: list[tuple[str, bool]] = dataclasses.field(default_factory=list)  # path, authed
    failures_left: int = 0  # answer the next N requests with HTTP 500
    delay_seconds: float = 0.0  # wait this long before every answer

    def publish(self, job: str, number: int, workspace: Path, folder: str) -> None:
        """Make ``number`` the job's last successful build, archiving ``workspace/folder``."""
        self.builds.setdefault(job, {})[number] = Published(workspace, folder)

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def artifacts(self, job: str, number: int) -> list[str]:
        published = self.builds[job][number]
        root = published.workspace / published.folder
        found = []
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            inside = path.relative_to(root).as_posix()
            if path.is_file() and not inside.startswith(_EXCLUDED):
                found.append(path.relative_to(published.workspace).as_posix())
        return found


def _answer(front: Front, path: str, authorization: str | None) -> tuple[int, bytes, str]:
    expected = "Basic " + base64.b64encode(f"{front.user}:{front.token}".encode()).decode()
    if authorization != expected:
        return 401, b"<html>Unauthorized</html>", "text/html"
    if front.failures_left > 0:
        front.failures_left -= 1
        return 500, b"<html>Oops: java.lang.NullPointerException</html>", "text/html"
    route, _, query = path.partition("?")
    query = urllib.parse.unquote(query)
    parts = route.strip("/").split("/")
    names = []
    while len(parts) >= 2 and parts[0] == "job":
        names.append(urllib.parse.unquote(parts[1]))
        parts = parts[2:]
    builds = front.builds.get("/".join(names))
    if not builds or not parts:
        return 404, b"<html>Not Found</html>", "text/html"
    if parts == ["lastSuccessfulBuild", "api", "json"] and query == "tree=number":
        return 200, json.dumps({"number": max(builds)}).encode(), "application/json"
    if not parts[0].isdigit() or int(parts[0]) not in builds:
        return 404, b"<html>Not Found</html>", "text/html"
    number = int(parts[0])
    if parts[1:] == ["api", "json"] and query == "tree=artifacts[relativePath]":
        listing = [{"relativePath": item} for item in front.artifacts("/".join(names), number)]
        document = {"_class": "WorkflowRun", "artifacts": listing}
        return 200, json.dumps(document).encode(), "application/json"
    if parts[1:2] == ["artifact"]:
        relative = urllib.parse.unquote("/".join(parts[2:]))
        if relative in front.artifacts("/".join(names), number):
            published = builds[number]
            return 200, _read(published.workspace / relative), "application/octet-stream"
    return 404, b"<html>Not Found</html>", "text/html"


def _read(path: Path) -> bytes:
    """Without moving atime: in the folder it is an entry's last use, and an archived
    copy would be read, not the folder itself."""
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    with os.fdopen(fd, "rb") as stream:
        return stream.read()


@contextlib.contextmanager
def serve(user: str, token: str) -> Iterator[Front]:
    front: Front

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            authorization = self.headers.get("Authorization")
            front.requests.append((self.path, authorization is not None))
            if front.delay_seconds:
                time.sleep(front.delay_seconds)
            status, body, kind = _answer(front, self.path, authorization)
            try:
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="Jenkins"')
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting

        def log_message(self, format: str, *args: object) -> None:
            pass

    with loopback_http.running(Handler) as url:
        front = Front(url + "/", user, token)
        yield front
