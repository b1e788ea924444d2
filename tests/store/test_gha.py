"""The gha:// store: v1 against act's cache server (a third-party implementation of
the GitHub cache service's v1 protocol, kept up by an act job for the session) and a
scripted fake of it for what act never answers (429 with Retry-After, 409 on a taken
key, a refused token, a dead service); v2 against the loopback twirp service of
gha_twirp_service.py, its bytes in azurite (fixtures in gha_backends.py).

act keeps creation times in whole seconds: tests that need one entry newer than
another wait just over a second between them.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_integration import report
from ci_integration.cli import main
from ci_integration.errors import UsageError
from ci_integration.store import http as gha_http
from ci_integration.store import open_store, retry
from ci_integration.store.base import digest_of
from ci_integration.store.gha import store as gha
from ci_integration.store.gha.store import VERSION, GhaStore
from ci_integration.store.gha.v2 import TwirpCacheClient
from ci_integration.store.manifest import BlobRef, Manifest
from ci_integration.store.prune import prune
from tests.store.gha_twirp_service import job_env
from tests.support import loopback_http
from tests.support.loopback_http import closed_port_url
from tests.unit.test_dircache import make_tree, restore, save, snapshot

MAIN = ["branch-main"]
FEATURE = ["branch-feature", "branch-main"]
PR = ["pr-7", "branch-feature", "branch-main"]
TIME_STEP = 1.1  # act's clock: whole seconds
FAKE_TOKEN = "fake-runtime-token-DO-NOT-PRINT-5c1d"


@pytest.fixture
def store(act_service) -> GhaStore:
    return open_store("gha://", act_service)


def manifest(key: str, *blobs: bytes, scope: str = "branch-main") -> bytes:
    """An entry's manifest naming ``blobs``, as a save writes it."""
    refs = tuple(BlobRef(digest_of(data), len(data)) for data in blobs)
    return Manifest("directory", key, scope, refs, {}, created=1.7e9).to_json()


def small_tree(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "who").write_text(text)
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "same").write_text("same in every tree\n")
    return root


# Against act's cache server


def test_a_new_save_of_a_key_wins(store, tmp_path):
    """The service never overwrites a key: each save is a new cache entry, and the
    newest is the entry."""
    save(store, MAIN, "overwritten", small_tree(tmp_path / "one", "first"))
    time.sleep(TIME_STEP)
    save(store, MAIN, "overwritten", small_tree(tmp_path / "two", "second"))
    assert restore(store, MAIN, "overwritten", tmp_path / "r").hit == "exact"
    assert (tmp_path / "r" / "who").read_text() == "second"


def test_scope_chain_and_restore_key_prefixes(store, tmp_path):
    save(store, MAIN, "deps-main-1", small_tree(tmp_path / "m", "main"))
    save(store, FEATURE, "deps-feature-1", small_tree(tmp_path / "f", "feature"))

    own = restore(store, FEATURE, "deps-feature-1", tmp_path / "r0")
    assert (own.hit, own.scope) == ("exact", "branch-feature")
    # A PR finds its target branch's entry first, then the default branch's.
    found = restore(store, PR, "deps-pr", tmp_path / "r1", ["deps-"])
    assert (found.hit, found.scope, found.key) == ("partial", "branch-feature", "deps-feature-1")
    assert restore(store, PR, "deps-pr", tmp_path / "r2", ["deps-main"]).scope == "branch-main"
    exact = restore(store, PR, "deps-main-1", tmp_path / "r3", ["deps-"])
    assert (exact.hit, exact.scope) == ("exact", "branch-main")
    # The default branch never reads a feature branch's entries; a prefix stays in
    # its scope (branch-main is a prefix of no other scope's encoding).
    assert restore(store, MAIN, "deps-pr", tmp_path / "r4", ["deps-feature"]).hit == "miss"
    # A pull request writes its own scope, never its target's.
    assert save(store, PR, "deps-main-1", small_tree(tmp_path / "p", "pr")).scope == "pr-7"
    restore(store, MAIN, "deps-main-1", tmp_path / "r5")
    assert (tmp_path / "r5" / "who").read_text() == "main"


def test_newest_entry_wins_among_prefix_matches(store, tmp_path):
    save(store, MAIN, "newest-1", small_tree(tmp_path / "a", "first"))
    time.sleep(TIME_STEP)
    save(store, MAIN, "newest-2", small_tree(tmp_path / "b", "second"))
    assert restore(store, MAIN, "newest-3", tmp_path / "r1", ["newest-"]).key == "newest-2"
    time.sleep(TIME_STEP)
    save(store, MAIN, "newest-1", small_tree(tmp_path / "c", "third"))
    assert restore(store, MAIN, "newest-3", tmp_path / "r2", ["newest-"]).key == "newest-1"
    assert (tmp_path / "r2" / "who").read_text() == "third"


def test_keys_keep_their_case_on_a_server_that_lower_cases(store, tmp_path):
    save(store, MAIN, "Case:Key/A", small_tree(tmp_path / "upper", "upper"))
    save(store, MAIN, "case:key/a", small_tree(tmp_path / "lower", "lower"))
    upper = restore(store, MAIN, "Case:Key/A", tmp_path / "r1")
    assert upper.key == "Case:Key/A" and (tmp_path / "r1" / "who").read_text() == "upper"
    assert store.newest_entry("branch-main", "case:") == "case:key/a"
    assert store.newest_entry("branch-main", "Case:") == "Case:Key/A"


def test_blobs_are_shared_across_keys_and_scopes(store, tmp_path):
    source = make_tree(tmp_path / "source")
    assert save(store, MAIN, "shared-1", source).uploaded_bytes > 0
    again = save(store, FEATURE, "shared-other", source)
    assert again.saved and again.uploaded_bytes == 0
    data = b"one blob, stored twice" * 100
    store.put_blob(digest_of(data), data)
    store.put_blob(digest_of(data), data)
    store.put_entry("branch-main", "twice", manifest("twice", data))
    assert store.get_blob(digest_of(data)) == data


def test_without_a_rest_token_list_and_prune_find_nothing_and_say_why(store, caplog):
    listed = manifest("listed")
    store.put_entry("branch-main", "listed", listed)
    with caplog.at_level(logging.WARNING, logger="ci_integration"):
        result = prune(store, max_age=0, max_size=0)
        assert store.list_entries() == []
    assert result.removed_entries == [] and result.removed_blobs == 0
    warnings = [r.message for r in caplog.records if "nothing listed, nothing pruned" in r.message]
    assert len(warnings) == 1 and "GITHUB_TOKEN" in warnings[0]  # once a store
    assert store.get_entry("branch-main", "listed") == listed


# Clear errors


def test_a_job_without_the_cache_variables_warns_and_goes_on(tmp_path, monkeypatch, capsys,
                                                             base_env):  # fmt: skip
    env = {**base_env, "ACTIONS_CACHE_URL": "http://127.0.0.1:9/", "BRANCH_NAME": "main",
           "JENKINS_URL": "https://ci.example.com/"}  # fmt: skip
    monkeypatch.chdir(tmp_path)
    command = ["cache", "restore", "data", "--key", "k", "--store", "gha://"]
    assert main(command, env=env) == 0
    err = capsys.readouterr().err
    assert "no ACTIONS_RUNTIME_TOKEN" in err and "actions/export-cache-env" in err
    assert main([*command, "--strict"], env=env) == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no ACTIONS_CACHE_URL or ACTIONS_RUNTIME_TOKEN"),
        ({"ACTIONS_RUNTIME_TOKEN": FAKE_TOKEN}, "no ACTIONS_CACHE_URL; GitHub gives"),
        ({"ACTIONS_CACHE_URL": "http://127.0.0.1:9/"}, "no ACTIONS_RUNTIME_TOKEN"),
        ({"ACTIONS_CACHE_SERVICE_V2": "True", "ACTIONS_RUNTIME_TOKEN": FAKE_TOKEN,
          "ACTIONS_CACHE_URL": "http://127.0.0.1:9/"}, "(v2) is not available: no ACTIONS_RES"),
        ({"ACTIONS_CACHE_SERVICE_V2": "true", "ACTIONS_RESULTS_URL": "http://127.0.0.1:9/"},
         "(v2) is not available: no ACTIONS_RUNTIME_TOKEN; GitHub gives"),
        ({"ACTIONS_CACHE_SERVICE_V2": "1", "ACTIONS_RUNTIME_TOKEN": FAKE_TOKEN,
          "ACTIONS_RESULTS_URL": "results.example.com"}, "ACTIONS_RESULTS_URL is not an http(s)"),
        ({"ACTIONS_CACHE_URL": "ftp://x/", "ACTIONS_RUNTIME_TOKEN": FAKE_TOKEN}, "http(s)"),
    ],
)  # fmt: skip
def test_missing_variables_are_named(env, message):
    store = open_store("gha://", env)  # opening never fails: cache trouble is a warning
    with pytest.raises(OSError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        store.get_entry("branch-main", "k")
    assert FAKE_TOKEN not in str(caught.value)


def test_the_url_is_gha_and_nothing_else():
    with pytest.raises(UsageError, match="gha://"):
        open_store("gha://somewhere/else", {})


# Against a scripted fake of the protocol


class FakeService:
    """The v1 protocol in memory. ``script``: (method, path prefix) -> answers to give
    first, each (status, headers, body)."""

    def __init__(self) -> None:
        self.committed: dict[str, bytes] = {}  # key -> bytes, in creation order
        self.reserved: dict[int, tuple[str, dict[int, bytes]]] = {}
        self.script: dict[tuple[str, str], list[tuple[int, dict, dict]]] = {}
        self.seen: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.url = ""

    def answer(self, handler: http.server.BaseHTTPRequestHandler) -> tuple[int, dict, bytes]:
        method, path = handler.command, handler.path
        self.seen.append((method, path, handler.headers.get("Authorization")))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        for (scripted_method, prefix), answers in self.script.items():
            if method == scripted_method and path.startswith(prefix) and answers:
                status, headers, document = answers.pop(0)
                return status, headers, json.dumps(document).encode()
        api = "/_apis/artifactcache/"
        if method == "GET" and path.startswith(api + "cache?"):
            wanted = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["keys"][0]
            matches = [k for k in self.committed if k.startswith(wanted)]
            if not matches:
                return 204, {}, b""
            key = wanted if wanted in matches else matches[-1]
            location = f"{self.url}/download/{urllib.parse.quote(key, safe='')}?sig=secret"
            return 200, {}, json.dumps({"cacheKey": key, "archiveLocation": location}).encode()
        if method == "POST" and path == api + "caches":
            key = json.loads(body)["key"]
            if key in self.committed or any(k == key for k, _ in self.reserved.values()):
                return 409, {}, b'{"message": "already exists"}'
            self.reserved[len(self.reserved) + 1] = (key, {})
            return 200, {}, json.dumps({"cacheId": len(self.reserved)}).encode()
        if method == "PATCH" and path.startswith(api + "caches/"):
            start = int(handler.headers["Content-Range"].split()[1].split("-")[0])
            self.reserved[int(path.rpartition("/")[2])][1][start] = body
            return 204, {}, b""
        if method == "POST" and path.startswith(api + "caches/"):
            key, parts = self.reserved[int(path.rpartition("/")[2])]
            self.committed[key] = b"".join(parts[start] for start in sorted(parts))
            return 204, {}, b""
        if method == "GET" and path.startswith("/download/"):
            key = urllib.parse.unquote(path[len("/download/") :].partition("?")[0])
            return 200, {}, self.committed[key]
        return 404, {}, b"{}"


@contextlib.contextmanager
def fake_service() -> Iterator[FakeService]:
    service = FakeService()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self) -> None:
            status, headers, body = service.answer(self)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    with loopback_http.running(Handler) as url:
        service.url = url
        yield service


def backed_off(sleeps: list[float], policy: retry.Policy = retry.GITHUB_CACHE) -> bool:
    """The waits between a policy's attempts, each stretched by up to half: for the
    cache service 3, 4.5, 6.75 and 10.1 s (5 attempts), as GitHub's own client."""
    bases = [policy.first_wait * policy.factor**n for n in range(policy.attempts - 1)]
    return len(sleeps) == len(bases) and all(
        base <= wait <= base * (1 + retry.JITTER) for base, wait in zip(bases, sleeps, strict=True)
    )


def fake_store(service: FakeService, sleeps: list[float]) -> GhaStore:
    env = {"ACTIONS_CACHE_URL": service.url + "/", "ACTIONS_RUNTIME_TOKEN": FAKE_TOKEN}
    return GhaStore(env, sleep=sleeps.append)


def test_a_throttled_upload_waits_as_long_as_retry_after_says():
    with fake_service() as service:
        sleeps: list[float] = []
        store = fake_store(service, sleeps)
        service.script[("POST", "/_apis/artifactcache/caches")] = [
            (429, {"Retry-After": "7"}, {"message": "too many requests"})]  # fmt: skip
        data = b"throttled" * 1000
        store.put_blob(digest_of(data), data)
        store.put_entry("branch-main", "k", manifest("k", data))
        assert sleeps == [7.0] and store.get_blob(digest_of(data)) == data
        # An hour is not waited for: the lookup fails at once (a miss, for the job).
        service.script[("GET", "/_apis/artifactcache/cache")] = [
            (429, {"Retry-After": "3600"}, {})]  # fmt: skip
        with pytest.raises(OSError, match="HTTP 429, Retry-After 3600 s is too long"):
            store.get_entry("branch-main", "k")
        # And not asked again by this command: the rest of a save fails at once.
        with pytest.raises(OSError, match="given up for this job"):
            store.get_entry("branch-main", "k")
        assert sleeps == [7.0]
        assert fake_store(service, sleeps).get_entry("branch-main", "k") == manifest("k", data)


def test_server_errors_are_retried_a_bounded_number_of_times():
    with fake_service() as service:
        sleeps: list[float] = []
        store = fake_store(service, sleeps)
        service.script[("GET", "/_apis/artifactcache/cache")] = [
            (503, {}, {"message": f"down; you sent {FAKE_TOKEN}"})] * 10  # fmt: skip
        with pytest.raises(OSError, match=r"HTTP 503 \(down; you sent \*\*\*\), 5 attempts"):
            store.get_entry("branch-main", "k")
        assert backed_off(sleeps)


def test_one_request_that_fails_among_successes_does_not_give_the_service_up():
    with fake_service() as service:
        fake_store(service, []).put_entry("branch-main", "k", manifest("k"))
        env = {"ACTIONS_CACHE_URL": service.url + "/", "ACTIONS_RUNTIME_TOKEN": FAKE_TOKEN}
        downloads: list[bytes] = []
        # While the lookup backs off, another request to the host succeeds (as a
        # save's other uploads do): the host answers, so it is not given up.
        store = GhaStore(env, sleep=lambda seconds: downloads.append(store.service.download(found)))
        found = store.service.lookup("ci-integration-entry:", VERSION)
        service.script[("GET", "/_apis/artifactcache/cache")] = [(503, {}, {})] * 5
        with pytest.raises(OSError, match="HTTP 503, 5 attempts"):
            store.get_entry("branch-main", "k")
        assert len(downloads) == 4
        assert store.get_entry("branch-main", "k") == manifest("k")  # asked again, answered


def test_a_save_larger_than_the_repository_quota_stops_and_writes_no_entry(
    tmp_path, monkeypatch, capsys, base_env
):
    monkeypatch.setattr(gha, "REPOSITORY_QUOTA_BYTES", 200_000)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big").write_bytes(os.urandom(300_000))  # packs do not shrink it
    monkeypatch.chdir(tmp_path)
    with fake_service() as service:
        env = {**base_env, "ACTIONS_CACHE_URL": service.url + "/",
               "ACTIONS_RUNTIME_TOKEN": FAKE_TOKEN, "BRANCH_NAME": "main",
               "JENKINS_URL": "https://ci.example.com/"}  # fmt: skip
        command = ["cache", "save", "data", "--key", "k", "--store", "gha://"]
        assert main(command, env=env) == 0
        assert "evicting every other entry: not saved" in capsys.readouterr().err
        assert not [key for key in service.committed if key.startswith("ci-integration-entry")]
        assert main([*command, "--strict"], env=env) == 3


def test_the_token_goes_to_the_service_and_never_to_the_download_location():
    with fake_service() as service:
        store = fake_store(service, [])
        store.put_entry("branch-main", "k", manifest("k"))
        assert store.get_entry("branch-main", "k") == manifest("k")
        downloads = [auth for method, path, auth in service.seen if path.startswith("/download/")]
        others = [auth for method, path, auth in service.seen if path.startswith("/_apis/")]
        assert downloads == [None]
        assert others and set(others) == {f"Bearer {FAKE_TOKEN}"}


def test_a_service_that_never_overwrites_still_gives_the_newest_save():
    with fake_service() as service:
        store = fake_store(service, [])
        first, second = manifest("Deps/1", b"first"), manifest("Deps/1", b"second")
        store.put_blob(digest_of(b"first"), b"first")
        store.put_entry("branch-main", "Deps/1", first)
        store.put_blob(digest_of(b"second"), b"second")
        store.put_entry("branch-main", "Deps/1", second)
        assert len(service.committed) == 4  # a bundle and an entry each, none overwritten
        assert all(key.islower() for key in service.committed)
        assert store.get_entry("branch-main", "Deps/1") == second
        assert store.newest_entry("branch-main", "Deps/") == "Deps/1"
        assert store.get_entry("branch-main", "Deps/") is None


def test_a_save_s_blobs_go_up_as_one_bundle_read_back_by_range():
    with fake_service() as service:
        store = fake_store(service, [])
        blobs = [os.urandom(1000 + n) for n in range(50)]
        for data in blobs:
            store.put_blob(digest_of(data), data)
        assert service.committed == {}  # nothing goes up before the entry
        store.put_entry("branch-main", "k", manifest("k", *blobs))
        assert sorted(key.split("-")[2] for key in service.committed) == ["bundle", "entry:branch"]
        reader = fake_store(service, [])
        reader.get_entry("branch-main", "k")
        assert all(reader.get_blob(digest_of(data)) == data for data in blobs)
        lookups = [path for method, path, _ in service.seen if "/cache?" in path]
        assert len(lookups) == 2  # the entry, then its bundle once


def test_a_refused_token_and_a_dead_service_are_one_line_errors():
    with fake_service() as service:
        store = fake_store(service, [])
        service.script[("GET", "/_apis/artifactcache/cache")] = [(401, {}, {})]
        with pytest.raises(PermissionError, match="token was refused"):
            store.get_entry("branch-main", "k")
    sleeps: list[float] = []
    env = {"ACTIONS_CACHE_URL": closed_port_url() + "/", "ACTIONS_RUNTIME_TOKEN": FAKE_TOKEN}
    dead = GhaStore(env, sleep=sleeps.append)
    with pytest.raises(OSError, match=r"cannot connect or the connection broke, 5 attempts"
                       ) as caught:  # fmt: skip
        dead.put_entry("branch-main", "k", manifest("k"))
    assert "\n" not in str(caught.value) and FAKE_TOKEN not in str(caught.value)
    assert len(sleeps) == 4
    # Given up for the job: the next call fails at once, with no retries of its own.
    with pytest.raises(OSError, match="given up for this job"):
        dead.get_entry("branch-main", "k")
    assert len(sleeps) == 4


# v2: the loopback twirp service, the bytes in azurite


def v2_store(service, sleeps: list[float] | None = None) -> GhaStore:
    return GhaStore(job_env(service), sleep=None if sleeps is None else sleeps.append)


def test_v2_a_round_trip_is_three_twirp_calls_with_the_job_s_token(twirp_service, tmp_path):
    """The round trip itself runs in the contract suite (gha-v2); here, what it asks."""
    store = v2_store(twirp_service)
    expected = snapshot(make_tree(tmp_path / "saved"))
    save(store, ["branch-main"], "k", tmp_path / "saved")
    assert restore(store, ["branch-main"], "k", tmp_path / "restored").hit == "exact"
    assert snapshot(tmp_path / "restored") == expected
    entries = twirp_service.entries.values()
    assert entries and all(entry.finalized for entry in entries)
    assert {method for method, _ in twirp_service.seen} == {
        "CreateCacheEntry", "FinalizeCacheEntryUpload", "GetCacheEntryDownloadURL"}  # fmt: skip
    assert {auth for _, auth in twirp_service.seen} == {f"Bearer {twirp_service.token}"}


def test_v2_restore_keys_fall_back_to_the_newest_prefix_match(twirp_service, tmp_path):
    store = v2_store(twirp_service)
    save(store, MAIN, "deps-1", small_tree(tmp_path / "a", "first"))
    save(store, MAIN, "deps-2", small_tree(tmp_path / "b", "second"))
    save(store, FEATURE, "deps-feature", small_tree(tmp_path / "f", "feature"))
    found = restore(store, MAIN, "deps-3", tmp_path / "r1", ["nothing-", "deps-"])
    assert (found.hit, found.key) == ("partial", "deps-2")
    save(store, MAIN, "deps-1", small_tree(tmp_path / "c", "third"))  # saved again: the newest
    found = restore(store, PR, "deps-3", tmp_path / "r2", ["deps-"])
    assert (found.scope, found.key) == ("branch-feature", "deps-feature")
    found = restore(store, MAIN, "deps-3", tmp_path / "r3", ["deps-"])
    assert found.key == "deps-1" and (tmp_path / "r3" / "who").read_text() == "third"
    assert restore(store, MAIN, "other", tmp_path / "r4", ["dep-x"]).hit == "miss"
    # Every save was a new cache entry: none was overwritten.
    assert len([key for key, _ in twirp_service.entries if key.startswith("ci-integration-entry:")
                and ":deps-1:" in key]) == 2  # fmt: skip


def test_v2_a_taken_entry_key_is_saved_under_a_new_stamp(twirp_service, monkeypatch):
    """A reservation whose answer was lost holds the key: the save goes on under another."""
    store = v2_store(twirp_service)
    stamps = iter(["held-1", "fresh-2"])
    monkeypatch.setattr(gha, "_stamp", lambda: next(stamps))
    taken = gha._entry_prefix("branch-main", "k") + ":held-1"
    assert twirp_service._create({"key": taken, "version": VERSION})[0] == 200  # never finalized
    store.put_entry("branch-main", "k", manifest("k"))
    assert v2_store(twirp_service).get_entry("branch-main", "k") == manifest("k")


def test_v2_a_large_bundle_goes_in_parallel_blocks_and_comes_back_by_range(twirp_service):
    store = v2_store(twirp_service)
    store.service.blobs.block_bytes = 1024 * 1024
    blobs = [os.urandom(1024 * 1024 + n) for n in range(3)] + [b"small"]
    for data in blobs:
        store.put_blob(digest_of(data), data)
    store.put_entry("branch-main", "k", manifest("k", *blobs))
    [bundle] = [key for key, _ in twirp_service.entries if key.startswith(gha.BUNDLE)]
    total = sum(map(len, blobs))
    blocks = twirp_service.committed_blocks(bundle, VERSION)
    assert blocks == [1024 * 1024] * (total // (1024 * 1024)) + [total % (1024 * 1024)]
    reader = v2_store(twirp_service)
    assert reader.get_entry("branch-main", "k") == manifest("k", *blobs)
    assert [reader.get_blob(digest_of(data)) for data in blobs] == blobs
    small = v2_store(twirp_service)
    small.put_blob(digest_of(b"one"), b"one")
    small.put_entry("branch-main", "one", manifest("one", b"one"))
    [one] = [
        key for key, _ in twirp_service.entries if key.startswith(gha.BUNDLE) and key != bundle
    ]
    assert twirp_service.committed_blocks(one, VERSION) == []  # one Put Blob


def test_v2_a_throttled_call_waits_as_long_as_retry_after_says(twirp_service):
    sleeps: list[float] = []
    store = v2_store(twirp_service, sleeps)
    throttled = (429, {"Retry-After": "7"}, {"code": "resource_exhausted", "msg": "slow down"})
    twirp_service.script["CreateCacheEntry"] = [throttled]
    data = b"throttled" * 1000
    store.put_blob(digest_of(data), data)
    store.put_entry("branch-main", "k", manifest("k", data))
    assert sleeps == [7.0] and store.get_blob(digest_of(data)) == data
    twirp_service.script["GetCacheEntryDownloadURL"] = [(429, {"Retry-After": "61"}, {})]
    with pytest.raises(OSError, match="HTTP 429, Retry-After 61 s is too long"):
        store.get_entry("branch-main", "k")
    assert sleeps == [7.0]
    assert v2_store(twirp_service, sleeps).get_entry("branch-main", "k") == manifest("k", data)
    busy = (503, {}, {"code": "unavailable", "msg": f"down; you sent {twirp_service.token}"})
    twirp_service.script["GetCacheEntryDownloadURL"] = [busy] * 10
    with pytest.raises(OSError, match=r"HTTP 503 \(down; you sent \*\*\*\), 5 attempts"):
        v2_store(twirp_service, sleeps).get_entry("branch-main", "k")
    assert sleeps[0] == 7.0 and backed_off(sleeps[1:])


def test_v2_a_refused_token_is_a_warning_and_a_strict_failure(
    twirp_service, tmp_path, monkeypatch, capsys, base_env
):
    refused = {**job_env(twirp_service), "ACTIONS_RUNTIME_TOKEN": FAKE_TOKEN}
    with pytest.raises(PermissionError, match="HTTP 401, the token was refused"):
        TwirpCacheClient(refused).lookup("k", VERSION)
    env = {**base_env, **refused, "BRANCH_NAME": "main", "JENKINS_URL": "https://ci.example.com/"}
    monkeypatch.chdir(tmp_path)
    command = ["cache", "restore", "data", "--key", "k", "--store", "gha://"]
    assert main(command, env=env) == 0
    assert "the token was refused" in capsys.readouterr().err
    assert main([*command, "--strict"], env=env) == 3
    assert FAKE_TOKEN not in capsys.readouterr().err


def test_v2_a_dead_service_is_a_miss_with_a_warning_soon(tmp_path, monkeypatch, capsys, base_env):
    sleeps: list[float] = []
    monkeypatch.setattr(gha_http, "_sleep", sleeps.append)
    env = {**base_env, "ACTIONS_CACHE_SERVICE_V2": "true", "ACTIONS_RESULTS_URL": closed_port_url(),
           "ACTIONS_RUNTIME_TOKEN": FAKE_TOKEN, "BRANCH_NAME": "feature", "CHANGE_TARGET": "main",
           "JENKINS_URL": "https://ci.example.com/"}  # fmt: skip
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("x")
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    command = ["cache", "restore", "other", "--key", "k", "--restore-key", "k-", "--json",
               "--store", "gha://"]  # fmt: skip
    assert main(command, env=env) == 0
    restored = capsys.readouterr()
    assert json.loads(restored.out)["cache_hit_kind"] == "miss"
    assert main(["cache", "save", "data", "--key", "k", "--store", "gha://"], env=env) == 0
    err = restored.err + capsys.readouterr().err
    assert err.count("warning") == 2 and "cannot connect" in err and FAKE_TOKEN not in err
    # One request's retries a command, however many calls it had to make.
    assert backed_off(sleeps[:4]) and backed_off(sleeps[4:]) and time.monotonic() - started < 10


def test_v2_no_token_nor_signature_in_any_output(twirp_service, tmp_path, monkeypatch, capsys,
                                                 caplog, base_env):  # fmt: skip
    handed_out: list[str] = []
    signed = twirp_service.sign

    def recorded(blob: str, permissions: str) -> str:
        handed_out.append(signed(blob, permissions))
        return handed_out[-1]

    twirp_service.sign = recorded
    env = {**base_env, **job_env(twirp_service), "BRANCH_NAME": "main",
           "JENKINS_URL": "https://ci.example.com/"}  # fmt: skip
    make_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    debug = ["--debug", "cache"]
    assert main([*debug, "save", "data", "--key", "k", "--store", "gha://"], env=env) == 0
    assert main([*debug, "restore", "out", "--key", "k", "--store", "gha://"], env=env) == 0
    # Refused signatures (forged) and storage that cannot be reached, with a signed URL
    # in hand: the messages name the storage's host, never the URL.
    twirp_service.sign = lambda blob, sp: recorded(blob, sp).replace("sig=", "sig=forged")
    (tmp_path / "data" / "new").write_text("new")
    assert main([*debug, "save", "data", "--key", "k2", "--store", "gha://"], env=env) == 0
    dead = closed_port_url()
    twirp_service.sign = lambda blob, sp: dead + "/" + recorded(blob, sp).split("/", 3)[3]
    monkeypatch.setattr(gha_http, "_sleep", lambda seconds: None)
    (tmp_path / "data" / "newer").write_text("newer")
    with caplog.at_level(logging.DEBUG, logger="ci_integration"):
        store = v2_store(twirp_service)
        store.put_blob(digest_of(b"unreachable"), b"unreachable")
        with pytest.raises(OSError) as caught:
            store.put_entry("branch-main", "dead", manifest("dead", b"unreachable"))
        assert main([*debug, "save", "data", "--key", "k3", "--store", "gha://"], env=env) == 0
    captured = capsys.readouterr()
    output = "\n".join([captured.out, captured.err, str(caught.value), caplog.text])
    assert "refused" in output and "cannot connect" in output and len(handed_out) >= 4
    signatures = [urllib.parse.parse_qs(url.partition("?")[2])["sig"][0] for url in handed_out]
    for secret in [twirp_service.token, *signatures, *(u.partition("?")[2] for u in handed_out)]:
        assert secret not in output
    assert "sig=" not in output and "/devstoreaccount1/" not in output


def test_the_log_masks_a_signed_azure_url():
    url = ("https://results.blob.core.windows.net/cache/abc?sv=2021-08-06&sr=b&sp=r"
           "&se=2030-01-01T00%3A00%3A00Z&sig=c2lnbmF0dXJl%2Bc2Vj%3D")  # fmt: skip
    masked = report.Redactor(set()).redact(f"downloading {url} failed")
    assert "c2lnbmF0dXJl" not in masked and "sig=***" in masked
