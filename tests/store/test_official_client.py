"""The loopback cache service (tests/store/gha_twirp_service.py) held to GitHub's own
client: @actions/cache 4.x from npm (tests/store/official_client/, installed by
./dev setup) saves and restores through it as on github.com, rides out its upload
limit and takes its refusals as GitHub's. Then the double's own limits and its REST
API, through plain requests.

What the official client (4.x) does, as these tests pin it down: a twirp call is tried
up to 5 times on 429 and 5xx, waiting 3 s, then 4.5-6.75 s, ... (Retry-After is not
read); a save the service refuses ends in a warning and cache id -1, never a throw; a
refused restore is a warning and a miss.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.store import gha_twirp_service
from tests.store.gha_twirp_service import SERVICE_PATH, TwirpCacheService, job_env, rest_env
from tests.unit.test_dircache import snapshot

ROOT = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).resolve().parent / "official_client" / "client.js"
MODULES = ROOT / ".venv" / "npm-official-client" / "node_modules"
INSTALL_HINT = (
    "no official cache client: ./dev setup installs it (npm install @actions/cache@4 "
    "into .venv/npm-official-client); it needs node, tar and zstd"
)
CLIENT_SECONDS = 120
VERSION = "v" * 64


@dataclasses.dataclass(frozen=True)
class Outcome:
    returned: object  # save: the cache id (-1: nothing saved); restore: the key or None
    threw: dict | None
    seconds: float
    log: str  # the client's stdout: info lines, ::warning:: and ::debug:: lines

    def warnings(self) -> list[str]:
        return [line.removeprefix("::warning::") for line in self.log.splitlines()
                if line.startswith("::warning::")]  # fmt: skip


@pytest.fixture(scope="session")
def node() -> str:
    """node, with @actions/cache installed where ./dev setup puts it, and the tar and
    zstd the client runs."""
    found = shutil.which("node")
    usable = (found and (MODULES / "@actions" / "cache" / "package.json").is_file()
              and shutil.which("tar") and shutil.which("zstd"))  # fmt: skip
    if not usable:
        if os.environ.get("CI") == "true":  # a green CI means the double was checked
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    return str(found)


@pytest.fixture
def client(node: str, twirp_service: TwirpCacheService, tmp_path: Path):
    """Runs the official client as a job step would (in its own workspace) against the
    test's service."""

    def run(mode: str, workspace: Path, key: str, restore_keys: list[str] | None = None,
            paths: tuple[str, ...] = ("data",)) -> Outcome:  # fmt: skip
        temp = tmp_path / "runner-temp"
        temp.mkdir(exist_ok=True)
        workspace.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
               "NODE_PATH": str(MODULES), "RUNNER_TEMP": str(temp),
               "GITHUB_WORKSPACE": str(workspace), **job_env(twirp_service)}  # fmt: skip
        request = {"paths": list(paths), "key": key, "restoreKeys": restore_keys or []}
        done = subprocess.run([node, str(CLIENT), mode, json.dumps(request)], cwd=workspace,
                              env=env, capture_output=True, text=True,
                              timeout=CLIENT_SECONDS)  # fmt: skip
        last = done.stdout.rstrip().rpartition("\n")[2]
        assert done.returncode == 0 and last.startswith("RESULT "), done.stdout + done.stderr
        result = json.loads(last.removeprefix("RESULT "))
        return Outcome(result.get("returned"), result.get("threw"), result["seconds"],
                       done.stdout)  # fmt: skip

    return run


def folder(root: Path, seed: int) -> Path:
    """A small tree of files, nested, some binary, different for each seed."""
    data = root / "data"
    (data / "nested" / "deeper").mkdir(parents=True)
    (data / "a.txt").write_text(f"alpha {seed}\n")
    (data / "nested" / "b.bin").write_bytes(os.urandom(70_000))
    (data / "nested" / "deeper" / "c.txt").write_text("gamma\n" * seed)
    (data / "nested" / "run.sh").write_text("#!/bin/sh\n")
    (data / "nested" / "run.sh").chmod(0o755)
    return data


def calls(service: TwirpCacheService, method: str) -> list[tuple[float, int]]:
    return [(moment, status) for moment, name, status in service.history if name == method]


# -- the official client -------------------------------------------------------------


def test_a_folder_saved_by_the_official_client_comes_back_equal_elsewhere(client,
                                                                           twirp_service,
                                                                           tmp_path):  # fmt: skip
    expected = snapshot(folder(tmp_path / "job-1", 1))
    saved = client("save", tmp_path / "job-1", "folder-linux-1")
    assert saved.threw is None and isinstance(saved.returned, int) and saved.returned > 0
    [entry] = twirp_service.entries.values()
    assert entry.finalized and entry.key == "folder-linux-1" and entry.id == saved.returned
    assert [status for _, status in calls(twirp_service, "CreateCacheEntry")] == [200]

    restored = client("restore", tmp_path / "job-2", "folder-linux-1")
    assert restored.threw is None and restored.returned == "folder-linux-1"
    assert "Cache hit for: folder-linux-1" in restored.log
    assert snapshot(tmp_path / "job-2" / "data") == expected
    assert client("restore", tmp_path / "job-3", "other-key").returned is None  # a miss


def test_the_official_client_restores_the_newest_restore_key_match(client, twirp_service,
                                                                   tmp_path):  # fmt: skip
    trees = {}
    for seed, key in enumerate(["deps-a", "deps-ab", "deps-b"], start=1):
        trees[key] = snapshot(folder(tmp_path / key, seed))
        assert client("save", tmp_path / key, key).returned > 0

    newest = client("restore", tmp_path / "job-1", "deps-c", ["nothing-", "deps-"])
    assert newest.returned == "deps-b" and "Cache hit for restore-key: deps-b" in newest.log
    assert snapshot(tmp_path / "job-1" / "data") == trees["deps-b"]
    # A restore key that is a whole key takes it, though a newer one starts with it.
    exact = client("restore", tmp_path / "job-2", "deps-c", ["deps-a"])
    assert exact.returned == "deps-a"
    assert snapshot(tmp_path / "job-2" / "data") == trees["deps-a"]
    # The key itself is a prefix too (GitHub's docs, "Cache key matching").
    assert client("restore", tmp_path / "job-3", "deps-a").returned == "deps-a"
    assert client("restore", tmp_path / "job-4", "deps-").returned == "deps-b"


def test_the_official_client_rides_out_the_upload_limit_on_its_own_schedule(client,
                                                                            twirp_service,
                                                                            tmp_path):  # fmt: skip
    """4.x tries a 429 again after 3 s, then 4.5-6.75 s, whatever Retry-After says."""
    twirp_service.uploads_per_minute, twirp_service.rate_window = 1, 5.0
    assert create(twirp_service, "someone-else")[0] == 200  # the window is full for 5 s
    expected = snapshot(folder(tmp_path / "job-1", 1))
    saved = client("save", tmp_path / "job-1", "limited")
    assert saved.threw is None and saved.returned > 0

    tries = calls(twirp_service, "CreateCacheEntry")[1:]
    assert [status for _, status in tries] in ([429, 200], [429, 429, 200])
    assert twirp_service.throttled == len(tries) - 1
    waits = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(tries)]
    assert 2.9 <= waits[0] <= 3.6  # its base interval, not the Retry-After of ~5 s
    if len(waits) > 1:
        assert 4.4 <= waits[1] <= 7.3  # 3 s x 1.5, up to x 1.5 again
    assert re.search(
        r"Attempt 1 of 5 failed with error: Failed request: \(429\) Too Many "
        r"Requests: rate limit exceeded\. Retrying request in 3000 ms",
        saved.log,
    )
    assert client("restore", tmp_path / "job-2", "limited").returned == "limited"
    assert snapshot(tmp_path / "job-2" / "data") == expected


def test_a_denied_write_is_a_warning_and_no_entry_for_the_official_client(client,
                                                                          twirp_service,
                                                                          tmp_path):  # fmt: skip
    folder(tmp_path / "job", 1)
    twirp_service.deny_write = True
    saved = client("save", tmp_path / "job", "denied")
    assert saved.threw is None and saved.returned == -1
    assert saved.warnings() == [f"Cache reservation failed: {gha_twirp_service.WRITE_DENIED}"]
    assert ("Failed to save: Unable to reserve cache with key denied, another job may be "
            "creating this cache." in saved.log.splitlines())  # fmt: skip
    assert [status for _, status in calls(twirp_service, "CreateCacheEntry")] == [200]  # once
    assert not calls(twirp_service, "FinalizeCacheEntryUpload") and not twirp_service.entries

    twirp_service.deny_write = lambda key: key.startswith("protected-")
    assert client("save", tmp_path / "job", "protected-1").returned == -1
    assert client("save", tmp_path / "job", "open-1").returned > 0


def test_storage_over_its_limit_is_one_refused_call_and_no_throw(client, twirp_service,
                                                                 tmp_path):  # fmt: skip
    folder(tmp_path / "job", 1)
    twirp_service.insufficient_usage = True
    saved = client("save", tmp_path / "job", "over")
    assert saved.threw is None and saved.returned == -1 and not twirp_service.entries
    assert [status for _, status in calls(twirp_service, "CreateCacheEntry")] == [403]
    # 4.x raises its UsageError and then takes it for a reservation that failed.
    assert ("Failed to save: Unable to reserve cache with key over, another job may be "
            "creating this cache." in saved.log.splitlines())  # fmt: skip


def test_a_denied_read_is_a_warning_and_a_miss_for_the_official_client(client, twirp_service,
                                                                       tmp_path):  # fmt: skip
    folder(tmp_path / "job-1", 1)
    assert client("save", tmp_path / "job-1", "secret-1").returned > 0
    twirp_service.deny_read = True
    restored = client("restore", tmp_path / "job-2", "secret-1")
    assert restored.threw is None and restored.returned is None
    assert restored.warnings() == [
        "Failed to restore: Failed to GetCacheEntryDownloadURL: Received non-retryable error: "
        f"Failed request: (403) Forbidden: {gha_twirp_service.READ_DENIED}"]  # fmt: skip
    assert [status for _, status in calls(twirp_service, "GetCacheEntryDownloadURL")] == [403]
    assert not (tmp_path / "job-2" / "data").exists()

    twirp_service.deny_read = lambda key: key.startswith("secret-")
    assert client("restore", tmp_path / "job-3", "secret-1").returned is None
    assert client("restore", tmp_path / "job-4", "public", ["secret-"]).returned == "secret-1"


# -- the double itself ---------------------------------------------------------------


def twirp(service: TwirpCacheService, method: str, body: dict) -> requests.Response:
    return requests.post(service.url + SERVICE_PATH.lstrip("/") + method, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {service.token}"})  # fmt: skip


def create(service: TwirpCacheService, key: str) -> tuple[int, requests.Response]:
    answer = twirp(service, "CreateCacheEntry", {"key": key, "version": VERSION})
    return answer.status_code, answer


def save(service: TwirpCacheService, key: str, data: bytes) -> None:
    """One entry as GitHub's client makes it: reserve, one Put Blob, finalize."""
    status, answer = create(service, key)
    assert status == 200 and answer.json()["ok"], answer.text
    put = requests.put(answer.json()["signed_upload_url"], data=data, timeout=30,
                       headers={"x-ms-blob-type": "BlockBlob",
                                "x-ms-version": gha_twirp_service.SAS_VERSION})  # fmt: skip
    assert put.status_code == 201, put.text
    done = twirp(service, "FinalizeCacheEntryUpload",
                 {"key": key, "version": VERSION, "size_bytes": str(len(data))})  # fmt: skip
    assert done.json()["ok"], done.text


def lookup(service: TwirpCacheService, key: str, restore_keys: list[str] | None = None):
    body = {"key": key, "restore_keys": restore_keys or [], "version": VERSION}
    answer = twirp(service, "GetCacheEntryDownloadURL", body)
    return answer.json().get("matched_key") or None


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_creates_past_the_limit_get_429_until_the_oldest_leaves_the_window(twirp_service):
    clock = twirp_service.clock = Clock()
    twirp_service.uploads_per_minute = 3
    for index in range(3):
        assert create(twirp_service, f"k{index}")[0] == 200
        clock.now += 10
    status, answer = create(twirp_service, "k3")
    assert status == 429 and answer.headers["Retry-After"] == "30"  # the first leaves at 60 s
    assert answer.json() == {"code": "resource_exhausted", "msg": "rate limit exceeded"}
    clock.now += 29.5
    assert create(twirp_service, "k3")[1].headers["Retry-After"] == "1"
    assert twirp_service.throttled == 2
    clock.now += 0.5
    assert create(twirp_service, "k3")[0] == 200
    assert create(twirp_service, "k4")[0] == 429  # the window holds k1, k2, k3 now
    # Lookups and finalizes are not uploads.
    assert twirp(twirp_service, "GetCacheEntryDownloadURL", {"key": "k0", "version": VERSION}).ok


def test_past_the_quota_the_least_recently_used_entries_go_with_their_blobs(twirp_service):
    clock = twirp_service.clock = Clock()
    twirp_service.quota_bytes = 3000
    for key in ["one", "two", "three"]:
        save(twirp_service, key, os.urandom(1000))
        clock.now += 60
    blob_of_two = twirp_service.entries[("two", VERSION)].blob
    assert lookup(twirp_service, "one") == "one"  # used again: now newer than two
    clock.now += 60
    save(twirp_service, "four", os.urandom(1000))
    assert twirp_service.evicted == ["two"]
    assert sorted(key for key, _ in twirp_service.entries) == ["four", "one", "three"]
    assert not twirp_service.blob_exists("", blob=blob_of_two)
    assert twirp_service.blob_exists("one")
    save(twirp_service, "big", os.urandom(2500))  # three entries go to make room
    assert twirp_service.evicted == ["two", "three", "one", "four"]
    assert [key for key, _ in twirp_service.entries] == ["big"]
    # A week unused, and an entry goes too.
    clock.now += 8 * 24 * 3600
    assert lookup(twirp_service, "big") is None and twirp_service.evicted[-1] == "big"


def test_lookups_take_the_exact_key_then_prefixes_newest_first(twirp_service):
    clock = twirp_service.clock = Clock()
    for key in ["app-1", "app-10", "app-2", "lib-1"]:
        save(twirp_service, key, b"x")
        clock.now += 1
    assert lookup(twirp_service, "app-1") == "app-1"  # exact, though app-10 is newer
    assert lookup(twirp_service, "app-") == "app-2"  # the key's own prefix, newest
    assert lookup(twirp_service, "none", ["nix-", "lib-", "app-"]) == "lib-1"  # in order
    assert lookup(twirp_service, "none", ["app-1"]) == "app-1"
    assert lookup(twirp_service, "none", ["zzz"]) is None
    other = twirp(twirp_service, "GetCacheEntryDownloadURL", {"key": "app-1", "version": "v2"})
    assert other.json()["ok"] is False  # another version is another entry


def test_refusals_have_github_s_shapes(twirp_service):
    twirp_service.deny_write = True
    status, answer = create(twirp_service, "k")
    refused = {"ok": False, "signed_upload_url": "", "message": gha_twirp_service.WRITE_DENIED}
    assert status == 200 and answer.json() == refused
    twirp_service.deny_write, twirp_service.insufficient_usage = False, True
    status, answer = create(twirp_service, "k")
    assert status == 403 and "insufficient usage" in answer.json()["msg"]
    twirp_service.insufficient_usage = False
    save(twirp_service, "k", b"data")
    twirp_service.deny_read = lambda key: key == "k"
    denied = twirp(twirp_service, "GetCacheEntryDownloadURL", {"key": "k", "version": VERSION})
    assert denied.status_code == 403
    assert denied.json() == {"code": "permission_denied", "msg": gha_twirp_service.READ_DENIED}


def rest(service: TwirpCacheService, method: str, path: str = "", token: str | None = None,
         **query) -> requests.Response:  # fmt: skip
    headers = {"Accept": "application/vnd.github+json"}
    if token != "":
        headers["Authorization"] = f"Bearer {token or service.rest_token}"
    url = f"{service.url}repos/{service.repository}/actions/caches{path}"
    return requests.request(method, url, params=query, headers=headers, timeout=30)


def test_the_rest_api_lists_caches_in_pages_by_key_ref_and_order(twirp_service):
    clock = twirp_service.clock = Clock()
    for index in range(5):
        twirp_service.ref = "refs/heads/main" if index < 4 else "refs/pull/7/merge"
        save(twirp_service, f"npm-{index}", b"x" * (10 * (5 - index)))
        clock.now += 3600
    env = rest_env(twirp_service)
    assert env == {"GITHUB_API_URL": twirp_service.url, "GITHUB_REPOSITORY": "owner/repo",
                   "GITHUB_TOKEN": twirp_service.rest_token}  # fmt: skip

    first = rest(twirp_service, "GET", key="npm-", sort="created_at", per_page=2)
    assert first.status_code == 200
    assert first.json()["total_count"] == 5
    [newest, second] = first.json()["actions_caches"]
    assert [newest["key"], second["key"]] == ["npm-4", "npm-3"]  # desc by default
    assert newest == {"id": newest["id"], "ref": "refs/pull/7/merge", "key": "npm-4",
                      "version": VERSION, "last_accessed_at": "2027-01-15T12:00:00.000Z",
                      "created_at": "2027-01-15T12:00:00.000Z", "size_in_bytes": 10}  # fmt: skip
    assert 'rel="next"' in first.headers["Link"] and "page=3" in first.headers["Link"]
    pages = [rest(twirp_service, "GET", key="npm-", sort="created_at", per_page=2, page=page)
             for page in (2, 3, 4)]  # fmt: skip
    assert [[row["key"] for row in page.json()["actions_caches"]] for page in pages] == [
        ["npm-2", "npm-1"], ["npm-0"], []]  # fmt: skip
    assert 'rel="next"' not in pages[1].headers["Link"]

    by_size = rest(twirp_service, "GET", sort="size_in_bytes", direction="asc")
    sizes = [row["size_in_bytes"] for row in by_size.json()["actions_caches"]]
    assert sizes == [10, 20, 30, 40, 50]
    main = rest(twirp_service, "GET", ref="refs/heads/main")
    assert main.json()["total_count"] == 4
    lookup(twirp_service, "npm-0")  # a use: last_accessed_at moves, created_at does not
    used = rest(twirp_service, "GET", key="npm-0").json()["actions_caches"][0]
    assert used["last_accessed_at"] > used["created_at"]
    assert rest(twirp_service, "GET").json()["actions_caches"][0]["key"] == "npm-0"  # default
    assert rest(twirp_service, "GET", per_page=500).status_code == 200  # at most 100 a page
    assert rest(twirp_service, "GET", sort="name").status_code == 422


def test_the_rest_api_deletes_by_id_and_by_key_with_their_blobs(twirp_service):
    save(twirp_service, "a", b"1")
    save(twirp_service, "b", b"2")
    twirp_service.ref = "refs/heads/feature"
    save(twirp_service, "c", b"3")
    ids = {row["key"]: row["id"] for row in rest(twirp_service, "GET").json()["actions_caches"]}
    blob_a = twirp_service.entries[("a", VERSION)].blob

    assert rest(twirp_service, "DELETE", f"/{ids['a']}").status_code == 204
    assert not twirp_service.blob_exists("", blob=blob_a) and lookup(twirp_service, "a") is None
    assert rest(twirp_service, "DELETE", f"/{ids['a']}").status_code == 404
    assert rest(twirp_service, "DELETE", key="c", ref="refs/heads/main").status_code == 404
    deleted = rest(twirp_service, "DELETE", key="c")
    assert deleted.status_code == 200
    assert [row["key"] for row in deleted.json()["actions_caches"]] == ["c"]
    assert deleted.json()["total_count"] == 1
    assert rest(twirp_service, "DELETE", key="b-").status_code == 404  # a whole key only
    assert [row["key"] for row in rest(twirp_service, "GET").json()["actions_caches"]] == ["b"]
    save(twirp_service, "a", b"again")  # a deleted key may be saved again


def test_the_rest_api_wants_its_own_token_and_write_access_to_delete(twirp_service):
    save(twirp_service, "a", b"1")
    assert rest(twirp_service, "GET", token="").status_code == 401
    assert rest(twirp_service, "GET", token=twirp_service.token).status_code == 401  # runtime
    assert rest(twirp_service, "GET", token=twirp_service.token).json()["message"] == (
        "Bad credentials")  # fmt: skip
    twirp_service.rest_can_write = False
    assert rest(twirp_service, "GET").status_code == 200
    refused = rest(twirp_service, "DELETE", key="a")
    assert refused.status_code == 403
    assert refused.json()["message"] == "Resource not accessible by integration"
    elsewhere = requests.get(
        f"{twirp_service.url}repos/other/repo/actions/caches",
        timeout=30,
        headers={"Authorization": f"Bearer {twirp_service.rest_token}"},
    )
    assert elsewhere.status_code == 404
    assert twirp(twirp_service, "CreateCacheEntry", {"key": "x", "version": VERSION}).ok
    assert not any(name.startswith("GET") for name, _ in twirp_service.seen)  # REST apart


def test_the_rest_api_rate_limit_says_when_it_resets(twirp_service):
    clock = twirp_service.clock = Clock()
    twirp_service.rest_requests_per_hour = 2
    assert rest(twirp_service, "GET").headers["X-RateLimit-Remaining"] == "1"
    assert rest(twirp_service, "GET").headers["X-RateLimit-Remaining"] == "0"
    limited = rest(twirp_service, "GET")
    assert limited.status_code == 403 and "rate limit exceeded" in limited.json()["message"]
    assert limited.headers["X-RateLimit-Reset"] == str(int(clock.now) + 3600)
    clock.now += 3600
    assert rest(twirp_service, "GET").status_code == 200
