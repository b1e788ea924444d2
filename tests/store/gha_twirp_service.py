"""The GitHub Actions cache service v2 on 127.0.0.1, for tests and the bench: the three
twirp calls in GitHub's documented JSON shapes, and the bytes in azurite (Microsoft's
Azure Storage emulator, from npm) through service SAS URLs signed here.

GitHub's semantics: an entry is (key, version); it exists for lookups once finalized;
a key is never overwritten (409 ``already_exists``); a lookup takes the exact key,
else for each restore key in turn the newest entry starting with it; a miss is
``ok: false``. What GitHub adds on top (scopes by branch, eviction) is left out.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import http.server
import itertools
import json
import os
import re
import shutil
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
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


class TwirpCacheService:
    """State and answers of the service. ``script``: method -> answers to give before
    its own, each (status, headers, JSON document); ``sign`` makes the URLs it hands
    out (tests swap it for a dead or forged one); ``seen``: (method, Authorization)."""

    def __init__(self, account_url: str, token: str) -> None:
        self.account_url = account_url
        self.token = token
        self.url = ""
        self.entries: dict[tuple[str, str], Entry] = {}
        self.script: dict[str, list[tuple[int, dict[str, str], dict]]] = {}
        self.seen: list[tuple[str, str | None]] = []
        self.sign: Callable[[str, str], str] = lambda blob, sp: blob_sas_url(account_url, blob, sp)
        self._lock = threading.Lock()
        self._order = itertools.count()

    def answer(self, method: str, authorization: str | None, body: bytes):
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
        return handlers[method](request)

    def _create(self, request: dict):
        key, version = str(request.get("key", "")), str(request.get("version", ""))
        if not key or not version or len(key) > 512:
            return _twirp_error(400, "invalid_argument", "key and version are required")
        with self._lock:
            if (key, version) in self.entries:
                return _twirp_error(409, "already_exists",
                                    "cache entry with the same key, version, and scope already "
                                    "exists")  # fmt: skip
            # Named after the key, so a test can tell an entry's upload from a blob's.
            blob = re.sub(r"[^A-Za-z0-9._-]", "-", key)[:200] + "-" + uuid.uuid4().hex
            entry = Entry(key, version, blob, next(self._order))
            self.entries[(key, version)] = entry
        return 200, {}, {"ok": True, "signed_upload_url": self.sign(entry.blob, "cw")}

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
        return 200, {}, {"ok": True, "entry_id": str(entry.order + 1)}

    def _download_url(self, request: dict):
        version = str(request.get("version", ""))
        wanted = [str(request.get("key", ""))]
        with self._lock:
            done = [e for e in self.entries.values() if e.finalized and e.version == version]
        found = [e for e in done if e.key == wanted[0]]
        for prefix in request.get("restore_keys") or []:
            if found:
                break
            found = sorted((e for e in done if e.key.startswith(prefix)), key=lambda e: e.order)
        if not found:
            return 200, {}, {"ok": False, "signed_download_url": "", "matched_key": ""}
        entry = found[-1]
        return 200, {}, {"ok": True, "signed_download_url": self.sign(entry.blob, "r"),
                         "matched_key": entry.key}  # fmt: skip

    def committed_blocks(self, key: str, version: str) -> list[int]:
        """The sizes of the blocks the entry's blob was committed in ([] for one Put Blob)."""
        entry = self.entries[(key, version)]
        url = blob_sas_url(self.account_url, entry.blob, "r") + "&comp=blocklist"
        listing = requests.get(url, headers={"x-ms-version": SAS_VERSION}, timeout=30).text
        committed = listing.partition("<CommittedBlocks>")[2].partition("</CommittedBlocks>")[0]
        return [int(size) for size in re.findall(r"<Size>(\d+)</Size>", committed)]


def _twirp_error(status: int, code: str, message: str):
    return status, {}, {"code": code, "msg": message}


@contextlib.contextmanager
def running_twirp_service(account_url: str, token: str) -> Iterator[TwirpCacheService]:
    """The service on a free port of 127.0.0.1, serving threads; stopped on exit."""
    service = TwirpCacheService(account_url, token)

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
            payload = json.dumps(document).encode()
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
