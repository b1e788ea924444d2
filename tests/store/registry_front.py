"""A front for the real test registry, on 127.0.0.1, doing what distribution 2.8 does
not and other registries do: tag lists in pages of ``n`` with a Link header (as the
distribution spec describes them), a Bearer challenge answered by a token service at
/token (the Docker token spec's shape), and refusals (503, 429) before an answer.
Everything else is passed on to the registry, and every request is recorded."""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.parse

import requests

PASSED_ON = ("accept", "content-type", "content-range")
ANSWERED = ("content-type", "docker-content-digest", "location", "range")
_REPOSITORY = re.compile(r"/v2/(.+?)/(?:blobs|manifests|tags)/")


class RegistryFront:
    def __init__(self, upstream: str, token: str | None = None) -> None:
        self.upstream, self.token = f"http://{upstream}", token
        self.fail_next: list[int] = []
        self.seen: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.token_requests: list[tuple[str, str | None]] = []  # query, Authorization
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.front = self  # type: ignore[attr-defined]
        self.address = f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RegistryFront:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        front: RegistryFront = self.server.front  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        path, _, query = self.path.partition("?")
        authorization = self.headers.get("Authorization")
        if path == "/token":
            front.token_requests.append((query, authorization))
            return self.answer(200, json.dumps({"token": front.token}).encode())
        front.seen.append((self.command, self.path, authorization))
        if front.fail_next:
            return self.answer(front.fail_next.pop(0), headers={"Retry-After": "1"})
        if front.token and authorization != f"Bearer {front.token}":
            repository = _REPOSITORY.match(path)[1]  # type: ignore[index]
            realm = f"http://{front.address}/token"
            challenge = (f'Bearer realm="{realm}",service="test-registry",'
                         f'scope="repository:{repository}:pull,push"')  # fmt: skip
            return self.answer(401, b"{}", {"WWW-Authenticate": challenge})
        headers = {k: v for k, v in self.headers.items() if k.lower() in PASSED_ON}
        upstream = requests.request(self.command, front.upstream + self.path, data=body,
                                    headers=headers, allow_redirects=False, timeout=30)  # fmt: skip
        answered = {k: v.replace(front.upstream, f"http://{front.address}")
                    for k, v in upstream.headers.items() if k.lower() in ANSWERED}  # fmt: skip
        if path.endswith("/tags/list") and upstream.status_code == 200:
            return self.page_of_tags(path, query, upstream.json(), answered)
        return self.answer(upstream.status_code, upstream.content, answered)

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def page_of_tags(self, path: str, query: str, listing: dict, headers: dict[str, str]):
        asked = urllib.parse.parse_qs(query)
        size, last = int(asked.get("n", ["1000"])[0]), asked.get("last", [""])[0]
        tags = sorted(tag for tag in listing["tags"] or [] if tag > last)
        if len(tags) > size:
            following = urllib.parse.urlencode({"n": size, "last": tags[size - 1]})
            headers = {**headers, "Link": f'<{path}?{following}>; rel="next"'}
        body = json.dumps({"name": listing["name"], "tags": tags[:size]}).encode()
        return self.answer(200, body, headers)
