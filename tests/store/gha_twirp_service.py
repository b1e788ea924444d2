"""The GitHub Actions cache service v2 on 127.0.0.1, for tests and the bench: the three
twirp calls in GitHub's documented JSON shapes, the bytes in azurite (Microsoft's Azure
Storage emulator, from npm) through service SAS URLs signed here, and the REST API for
a repository's caches on the same server (GITHUB_API_URL is the service's URL).

GitHub's semantics: an entry is (key, version); it exists for lookups once finalized;
a key is never overwritten (409 ``already_exists``); a lookup takes the exact key, else
the newest entry starting with it, else for each restore key in turn the same (GitHub's
docs, "Cache key matching"); a miss is ``ok: false``. GitHub's limits are here too (the
upload rate, the repository's quota and least-recently-used eviction, the refusals of a
policy); scopes by branch are left out: every entry has the service's ``ref``.

The refusals, in the shapes GitHub's client (actions/toolkit, packages/cache) expects:
a token without writable scopes gets CreateCacheEntry ``ok: false`` with a message
starting "cache write denied:" (toolkit#2429); one without readable scopes gets
GetCacheEntryDownloadURL as a twirp 403 whose message holds "cache read denied:"
(toolkit#2447, #2451); storage over its paid limit is a twirp error whose message holds
"insufficient usage" (the client's UsageError); the upload limit is a 429 with
Retry-After (GitHub's changelog of 2026-01-16, 200 uploads a minute per repository).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import http.server
import itertools
import json
import math
import os
import re
import secrets
import shutil
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import requests

from tests.support import daemons, loopback_http

ROOT = Path(__file__).resolve().parents[2]
# Azurite's well-known development account: public, and valid for azurite only.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
CONTAINER = "actions-cache"
SAS_VERSION = "2021-08-06"
SAS_SECONDS = 3600
AZURITE_START_SECONDS = 30
INSTALL_HINT = "no azurite: ./dev setup installs it (npm install azurite@3)"
SERVICE_PATH = "/twirp/github.actions.results.api.v1.CacheService/"
DEFAULT_REF = "refs/heads/main"
UPLOADS_PER_MINUTE = 200  # CreateCacheEntry calls per repository
RATE_WINDOW_SECONDS = 60.0
QUOTA_BYTES = 10 * 1024**3  # a repository's default cache storage
MAX_IDLE_SECONDS = 7 * 24 * 3600.0  # GitHub evicts entries unused for a week
RATE_LIMITED = "rate limit exceeded"
WRITE_DENIED = "cache write denied: token has no writable scopes"
READ_DENIED = "cache read denied: token has no readable scopes"
INSUFFICIENT_USAGE = "insufficient usage to create cache entry"


def azurite_binary() -> str | None:
    """azurite-blob from PATH, else where ./dev setup puts it."""
    found = shutil.which("azurite-blob")
    local = ROOT / ".venv" / "npm" / "node_modules" / ".bin" / "azurite-blob"
    if found is None and os.access(local, os.X_OK):
        found = str(local)
    return found


@contextlib.contextmanager
def running_azurite(binary: str, folder: Path, *, in_memory: bool = True) -> Iterator[str]:
    """azurite's blob service on a free port of 127.0.0.1, with one container, its
    data in memory (else in ``folder``); yields the account's URL. Stopped by its pid
    at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "azurite.log"
    where = ["--inMemoryPersistence"] if in_memory else ["--location", str(folder / "data")]
    command = [binary, "--blobHost", "127.0.0.1", "--blobPort", "0", *where,
               "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"]  # fmt: skip
    ready = r"listens on (http://127\.0\.0\.1:\d+)"
    started = daemons.running(command, log_path, ready, what="azurite", cwd=folder,
                              start_seconds=AZURITE_START_SECONDS)  # fmt: skip
    with started as found:
        account_url = f"{found[1]}/{ACCOUNT}"
        created = requests.put(f"{account_url}/{CONTAINER}?restype=container&{account_sas()}",
                               headers={"x-ms-version": SAS_VERSION}, timeout=30)  # fmt: skip
        created.raise_for_status()
        yield account_url


def _sign(text: str) -> str:
    key = base64.b64decode(ACCOUNT_KEY)
    return base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()


def _expiry() -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=SAS_SECONDS)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def account_sas() -> str:
    """An account SAS that may create containers (the string to sign of 2020-12-06 on)."""
    fields = {"sp": "rwdlacup", "ss": "b", "srt": "sco", "se": _expiry(), "sv": SAS_VERSION}
    signed = "\n".join([ACCOUNT, fields["sp"], fields["ss"], fields["srt"], "", fields["se"],
                        "", "", fields["sv"], "", ""])  # fmt: skip
    return urllib.parse.urlencode({**fields, "sig": _sign(signed)})


def blob_sas_url(account_url: str, blob: str, permissions: str) -> str:
    """A service SAS URL for one blob of the container, as GitHub hands them out."""
    fields = {"sp": permissions, "se": _expiry(), "sv": SAS_VERSION, "sr": "b"}
    resource = f"/blob/{ACCOUNT}/{CONTAINER}/{blob}"
    signed = "\n".join([fields["sp"], "", fields["se"], resource, "", "", "", fields["sv"],
                        fields["sr"], "", "", "", "", "", "", ""])  # fmt: skip
    query = urllib.parse.urlencode({**fields, "sig": _sign(signed)})
    return f"{account_url}/{CONTAINER}/{blob}?{query}"


@dataclasses.dataclass
class Entry:
    key: str
    version: str
    blob: str
    order: int  # creation order: the newest has the highest
    finalized: bool = False
    size: int = 0
    id: int = 0  # what the REST API calls it (and FinalizeCacheEntryUpload's entry_id)
    ref: str = DEFAULT_REF
    created: float = 0.0  # the service's clock
    last_used: float = 0.0  # creation, or the last lookup that returned it


Denial = bool | Callable[[str], bool]
Answer = tuple[int, dict[str, str], dict | None]


class TwirpCacheService:
    """State and answers of the service. ``script``: method -> answers to give before
    its own, each (status, headers, JSON document) (``"REST"`` for the REST API);
    ``sign`` makes the URLs it hands out (tests swap it for a dead or forged one);
    ``seen``: (method, Authorization) of each twirp call; ``history``: (clock, method,
    status) of every answer, REST ones as ``"GET /path"``.

    GitHub's limits, all plain attributes a test may change while it runs:

    - ``uploads_per_minute`` CreateCacheEntry calls per ``rate_window`` seconds (200 in
      60 s per repository); past it 429, twirp ``resource_exhausted`` "rate limit
      exceeded", ``Retry-After`` in whole seconds until the oldest call of the window
      leaves it; ``throttled`` counts them;
    - ``quota_bytes`` (10 GB): a finalize that takes the finalized sizes past it evicts
      the least recently used other entries until they fit (``evicted``: their keys);
      ``max_idle_seconds`` (7 days): entries no lookup returned for that long go too;
    - ``deny_read`` / ``deny_write`` (a flag, or a predicate of the key): the policy
      refusals of a token without readable or writable cache scopes;
      ``insufficient_usage``: the repository's storage is over its paid limit;
    - ``clock``: seconds since the epoch (``time.time``); a test ages entries with it.
    """

    def __init__(self, account_url: str, token: str, *, rest_token: str | None = None,
                 repository: str = "owner/repo", ref: str = DEFAULT_REF,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.account_url = account_url
        self.token = token
        self.url = ""
        self.entries: dict[tuple[str, str], Entry] = {}
        self.script: dict[str, list[tuple[int, dict[str, str], dict]]] = {}
        self.seen: list[tuple[str, str | None]] = []
        self.history: list[tuple[float, str, int]] = []
        self.sign: Callable[[str, str], str] = lambda blob, sp: blob_sas_url(account_url, blob, sp)
        self.clock = clock
        self.uploads_per_minute = UPLOADS_PER_MINUTE
        self.rate_window = RATE_WINDOW_SECONDS
        self.throttled = 0
        self.quota_bytes = QUOTA_BYTES
        self.max_idle_seconds: float | None = MAX_IDLE_SECONDS
        self.evicted: list[str] = []
        self.deny_read: Denial = False
        self.deny_write: Denial = False
        self.insufficient_usage = False
        # The REST API: a token of its own (GITHUB_TOKEN), the one repository it serves,
        # the ref new entries are scoped to, whether the token may delete (actions:
        # write), and GitHub's primary rate limit (None: unlimited).
        self.rest_token = rest_token or f"ghs_fake{secrets.token_hex(16)}"
        self.repository = repository
        self.ref = ref
        self.rest_can_write = True
        self.rest_requests_per_hour: int | None = None
        self.rest_seen: list[tuple[str, str, str | None]] = []
        self._rest_window: tuple[float, int] = (0.0, 0)  # (start, requests in it)
        self._creates: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._order = itertools.count()

    # -- the twirp service --------------------------------------------------------------

    def answer(self, method: str, authorization: str | None, body: bytes):
        answer = self._answer(method, authorization, body)
        with self._lock:
            self.history.append((self.clock(), method, answer[0]))
        return answer

    def _answer(self, method: str, authorization: str | None, body: bytes):
        with self._lock:
            self.seen.append((method, authorization))
            scripted = self.script.get(method)
            if scripted:
                return scripted.pop(0)
        if authorization != f"Bearer {self.token}":
            return _twirp_error(401, "unauthenticated", "the runtime token is not valid")
        try:
            request = json.loads(body)
        except ValueError:
            return _twirp_error(400, "malformed", "the body is not JSON")
        handlers = {"CreateCacheEntry": self._create, "FinalizeCacheEntryUpload": self._finalize,
                    "GetCacheEntryDownloadURL": self._download_url}  # fmt: skip
        if method not in handlers:
            return _twirp_error(404, "bad_route", f"no method {method}")
        if not isinstance(request, dict):
            return _twirp_error(400, "malformed", "the body is not a JSON object")
        return handlers[method](request)

    def _create(self, request: dict):
        key, version = str(request.get("key", "")), str(request.get("version", ""))
        wait = self._take_upload_slot()
        if wait is not None:
            return 429, {"Retry-After": str(wait)}, {"code": "resource_exhausted",
                                                     "msg": RATE_LIMITED}  # fmt: skip
        if not key or not version or len(key) > 512:
            return _twirp_error(400, "invalid_argument", "key and version are required")
        if _denied(self.deny_write, key):
            return 200, {}, {"ok": False, "signed_upload_url": "", "message": WRITE_DENIED}
        if self.insufficient_usage:
            return _twirp_error(403, "permission_denied", INSUFFICIENT_USAGE)
        with self._lock:
            if (key, version) in self.entries:
                return _twirp_error(409, "already_exists",
                                    "cache entry with the same key, version, and scope already "
                                    "exists")  # fmt: skip
            # Named after the key, so a test can tell an entry's upload from a blob's.
            blob = re.sub(r"[^A-Za-z0-9._-]", "-", key)[:200] + "-" + uuid.uuid4().hex
            order, now = next(self._order), self.clock()
            entry = Entry(key, version, blob, order, id=order + 1, ref=self.ref, created=now,
                          last_used=now)  # fmt: skip
            self.entries[(key, version)] = entry
        return 200, {}, {"ok": True, "signed_upload_url": self.sign(entry.blob, "cw")}

    def _take_upload_slot(self) -> int | None:
        """None when one more upload fits the window (and it is counted), else the
        whole seconds until the window's oldest upload leaves it."""
        with self._lock:
            now = self.clock()
            while self._creates and self._creates[0] <= now - self.rate_window:
                self._creates.popleft()
            if len(self._creates) < self.uploads_per_minute:
                self._creates.append(now)
                return None
            self.throttled += 1
            return max(1, math.ceil(self._creates[0] + self.rate_window - now))

    def _finalize(self, request: dict):
        key, version = str(request.get("key", "")), str(request.get("version", ""))
        with self._lock:
            entry = self.entries.get((key, version))
        if entry is None or entry.finalized:
            return 200, {}, {"ok": False, "entry_id": "0", "message": "no upload under way"}
        stored = requests.head(blob_sas_url(self.account_url, entry.blob, "r"), timeout=30)
        size = int(request.get("size_bytes") or 0)
        if stored.status_code != 200 or int(stored.headers["Content-Length"]) != size:
            return 200, {}, {"ok": False, "entry_id": "0", "message": "the upload is incomplete"}
        with self._lock:
            entry.finalized, entry.size = True, size
            entry.last_used = self.clock()
        self._evict(keep=entry)
        return 200, {}, {"ok": True, "entry_id": str(entry.id)}

    def _download_url(self, request: dict):
        key, version = str(request.get("key", "")), str(request.get("version", ""))
        restore_keys = [str(prefix) for prefix in request.get("restore_keys") or []]
        if _denied(self.deny_read, key):
            return _twirp_error(403, "permission_denied", READ_DENIED)
        self._evict()
        with self._lock:
            entry = _match(self.entries.values(), key, restore_keys, version)
            if entry is not None:
                entry.last_used = self.clock()
        if entry is None:
            return 200, {}, {"ok": False, "signed_download_url": "", "matched_key": ""}
        return 200, {}, {"ok": True, "signed_download_url": self.sign(entry.blob, "r"),
                         "matched_key": entry.key}  # fmt: skip

    def _evict(self, keep: Entry | None = None) -> None:
        """Entries idle past ``max_idle_seconds``, then the least recently used until
        the finalized sizes fit ``quota_bytes`` (``keep``, the entry just finalized,
        stays); their blobs deleted from azurite."""
        with self._lock:
            done = sorted((e for e in self.entries.values() if e.finalized and e is not keep),
                          key=lambda e: (e.last_used, e.order))  # fmt: skip
            idle = self.max_idle_seconds
            gone = [e for e in done if idle is not None and e.last_used < self.clock() - idle]
            total = sum(e.size for e in self.entries.values() if e.finalized) - sum(
                e.size for e in gone)  # fmt: skip
            for entry in done:
                if total <= self.quota_bytes:
                    break
                if entry not in gone:
                    gone.append(entry)
                    total -= entry.size
            for entry in gone:
                del self.entries[(entry.key, entry.version)]
                self.evicted.append(entry.key)
        for entry in gone:
            self._delete_blob(entry)

    def _delete_blob(self, entry: Entry) -> None:
        url = blob_sas_url(self.account_url, entry.blob, "d")
        requests.delete(url, headers={"x-ms-version": SAS_VERSION}, timeout=30)

    def committed_blocks(self, key: str, version: str) -> list[int]:
        """The sizes of the blocks the entry's blob was committed in ([] for one Put Blob)."""
        entry = self.entries[(key, version)]
        url = blob_sas_url(self.account_url, entry.blob, "r") + "&comp=blocklist"
        listing = requests.get(url, headers={"x-ms-version": SAS_VERSION}, timeout=30).text
        committed = listing.partition("<CommittedBlocks>")[2].partition("</CommittedBlocks>")[0]
        return [int(size) for size in re.findall(r"<Size>(\d+)</Size>", committed)]

    def blob_exists(self, key: str, version: str | None = None, *, blob: str = "") -> bool:
        """Whether azurite holds the entry's blob (or the blob named ``blob``)."""
        if not blob:
            [blob] = [e.blob for e in self.entries.values()
                      if e.key == key and version in (None, e.version)]  # fmt: skip
        url = blob_sas_url(self.account_url, blob, "r")
        return requests.head(url, headers={"x-ms-version": SAS_VERSION}, timeout=30).ok

    # -- the REST API -------------------------------------------------------------------

    def rest(self, method: str, target: str, authorization: str | None) -> Answer:
        """An answer of ``/repos/{owner}/{repo}/actions/caches[/{id}]`` (GET, DELETE)."""
        answer = self._rest(method, target, authorization)
        with self._lock:
            self.rest_seen.append((method, target, authorization))
            self.history.append((self.clock(), f"{method} {target.partition('?')[0]}", answer[0]))
        return answer

    def _rest(self, method: str, target: str, authorization: str | None) -> Answer:
        with self._lock:
            scripted = self.script.get("REST")
            if scripted:
                return scripted.pop(0)
        parts = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(parts.query))
        found = re.fullmatch(r"/repos/([^/]+/[^/]+)/actions/caches(?:/([^/]+))?/?", parts.path)
        if not authorization:
            return _rest_error(401, "Requires authentication")
        if authorization not in (f"Bearer {self.rest_token}", f"token {self.rest_token}"):
            return _rest_error(401, "Bad credentials")
        limited = self._rest_rate_limit()
        if limited[0]:
            return limited
        headers = limited[1]
        if found is None or found[1] != self.repository:
            return _rest_error(404, "Not Found", headers)
        if method == "GET" and found[2] is None:
            return self._list(query, headers)
        if method != "DELETE":
            return _rest_error(404, "Not Found", headers)
        if not self.rest_can_write:
            return _rest_error(403, "Resource not accessible by integration", headers)
        if found[2] is not None:
            return self._delete_by_id(found[2], headers)
        return self._delete_by_key(query, headers)

    def _rest_rate_limit(self) -> tuple[int, dict[str, str], dict | None]:
        """(0, headers) while the hour's requests are within ``rest_requests_per_hour``,
        else GitHub's 403 for a spent primary rate limit."""
        limit = self.rest_requests_per_hour
        if limit is None:
            return 0, {}, None
        with self._lock:
            now = self.clock()
            start, used = self._rest_window
            if now >= start + 3600:
                start, used = now, 0
            used += 1
            self._rest_window = (start, used)
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining":
                   str(max(0, limit - used)), "X-RateLimit-Used": str(min(used, limit)),
                   "X-RateLimit-Reset": str(math.ceil(start + 3600)),
                   "X-RateLimit-Resource": "core"}  # fmt: skip
        if used > limit:
            return _rest_error(403, "API rate limit exceeded for installation ID 1.", headers)
        return 0, headers, None

    def _list(self, query: dict[str, str], headers: dict[str, str]) -> Answer:
        sort = query.get("sort", "last_accessed_at")
        direction = query.get("direction", "desc")
        try:
            per_page = min(100, max(1, int(query.get("per_page", "30"))))
            page = max(1, int(query.get("page", "1")))
        except ValueError:
            return _rest_error(422, "Validation Failed", headers)
        fields = {"created_at": "created", "last_accessed_at": "last_used",
                  "size_in_bytes": "size"}  # fmt: skip
        if sort not in fields or direction not in ("asc", "desc"):
            return _rest_error(422, "Validation Failed", headers)
        self._evict()
        with self._lock:
            rows = [e for e in self.entries.values() if e.finalized
                    and e.key.startswith(query.get("key", ""))
                    and query.get("ref", e.ref) == e.ref]  # fmt: skip
            rows.sort(key=lambda e: (getattr(e, fields[sort]), e.id), reverse=direction == "desc")
            shown = [_cache_row(e) for e in rows[(page - 1) * per_page : page * per_page]]
        links = self._links(query, page, per_page, len(rows))
        return 200, {**headers, **links}, {"total_count": len(rows), "actions_caches": shown}

    def _links(self, query: dict[str, str], page: int, per_page: int, total: int):
        """GitHub's Link header: next and last (while there is a next), first and prev."""
        last = max(1, math.ceil(total / per_page))
        base = f"{self.url.rstrip('/')}/repos/{self.repository}/actions/caches"

        def link(number: int, rel: str) -> str:
            wanted = {**query, "per_page": str(per_page), "page": str(number)}
            return f'<{base}?{urllib.parse.urlencode(wanted)}>; rel="{rel}"'

        links = [link(page + 1, "next"), link(last, "last")] if page < last else []
        if page > 1:
            links = [link(min(page - 1, last), "prev"), link(1, "first"), *links]
        return {"Link": ", ".join(links)} if links else {}

    def _delete_by_id(self, cache_id: str, headers: dict[str, str]) -> Answer:
        with self._lock:
            gone = [e for e in self.entries.values() if e.finalized and str(e.id) == cache_id]
            for entry in gone:
                del self.entries[(entry.key, entry.version)]
        if not gone:
            return _rest_error(404, "Not Found", headers)
        self._delete_blob(gone[0])
        return 204, headers, None

    def _delete_by_key(self, query: dict[str, str], headers: dict[str, str]) -> Answer:
        key = query.get("key", "")
        if not key:
            return _rest_error(422, "Validation Failed", headers)
        with self._lock:
            gone = sorted((e for e in self.entries.values() if e.finalized and e.key == key
                           and query.get("ref", e.ref) == e.ref), key=lambda e: e.id)  # fmt: skip
            for entry in gone:
                del self.entries[(entry.key, entry.version)]
        if not gone:
            return _rest_error(404, "Not Found", headers)
        for entry in gone:
            self._delete_blob(entry)
        rows = [_cache_row(e) for e in gone]
        return 200, headers, {"total_count": len(rows), "actions_caches": rows}


def _match(entries: Iterable[Entry], key: str, restore_keys: list[str], version: str):
    """GitHub's lookup: the exact key, else the newest entry starting with it, else for
    each restore key in turn the same (exact first, else the newest by creation)."""
    done = [e for e in entries if e.finalized and e.version == version]
    for wanted in [key, *restore_keys]:
        exact = [e for e in done if e.key == wanted]
        started = [e for e in done if e.key.startswith(wanted)] if wanted else []
        if exact or started:
            return max(exact or started, key=lambda e: e.order)
    return None


def _denied(denial: Denial, key: str) -> bool:
    return bool(denial(key)) if callable(denial) else bool(denial)


def _twirp_error(status: int, code: str, message: str):
    return status, {}, {"code": code, "msg": message}


def _rest_error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    documentation = "https://docs.github.com/rest/actions/cache"
    return status, dict(headers or {}), {"message": message, "documentation_url": documentation,
                                         "status": str(status)}  # fmt: skip


def _cache_row(entry: Entry) -> dict:
    return {"id": entry.id, "ref": entry.ref, "key": entry.key, "version": entry.version,
            "last_accessed_at": _iso(entry.last_used), "created_at": _iso(entry.created),
            "size_in_bytes": entry.size}  # fmt: skip


def _iso(moment: float) -> str:
    """GitHub's REST time stamps: UTC, milliseconds, a Z."""
    when = datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


@contextlib.contextmanager
def running_twirp_service(account_url: str, token: str, **options) -> Iterator[TwirpCacheService]:
    """The service on a free port of 127.0.0.1, serving threads; stopped on exit.
    ``options``: TwirpCacheService's (rest_token, repository, ref, clock)."""
    service = TwirpCacheService(account_url, token, **options)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as GitHub's front end
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path.startswith(SERVICE_PATH):
                method = self.path[len(SERVICE_PATH) :]
                status, headers, document = service.answer(
                    method, self.headers.get("Authorization"), body)  # fmt: skip
            else:
                status, headers, document = _twirp_error(404, "bad_route", "not a twirp route")
            self._send(status, headers, document)

        def do_GET(self) -> None:
            self._send(*service.rest("GET", self.path, self.headers.get("Authorization")))

        def do_DELETE(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self._send(*service.rest("DELETE", self.path, self.headers.get("Authorization")))

        def _send(self, status: int, headers: dict[str, str], document: dict | None) -> None:
            payload = b"" if document is None else json.dumps(document).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with loopback_http.running(Handler) as url:
        service.url = url + "/"
        yield service


def job_env(service: TwirpCacheService) -> dict[str, str]:
    """What export-cache-env hands a job's steps on github.com."""
    return {"ACTIONS_CACHE_SERVICE_V2": "true", "ACTIONS_RESULTS_URL": service.url,
            "ACTIONS_RUNTIME_TOKEN": service.token}  # fmt: skip


def rest_env(service: TwirpCacheService, repository: str = "owner/repo") -> dict[str, str]:
    """What a job's step needs for the REST API on the service (``${{ github.token }}``
    as GITHUB_TOKEN); a ``repository`` other than the service's answers 404."""
    return {"GITHUB_API_URL": service.url, "GITHUB_REPOSITORY": repository,
            "GITHUB_TOKEN": service.rest_token}  # fmt: skip
