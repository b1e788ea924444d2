"""What only the OCI registry store does, against Debian's docker-registry on 127.0.0.1:
its layout as seen by any registry client, tags for any key, tag lists in pages, auth
(Basic from htpasswd, Bearer from a token service) with the login from a docker
config, retries, and how trouble reaches the job (one line, no secret, bounded)."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import requests

from ci_integration.errors import UsageError
from ci_integration.store import open_store
from ci_integration.store.base import digest_of
from ci_integration.store.manifest import BlobRef, Manifest
from ci_integration.store.oci import BLOB_LAYER, EMPTY, ENTRY_ARTIFACT, ENTRY_LAYER, OCIStore
from ci_integration.store.prune import prune
from ci_integration.store.registry_client import docker_login, plain_http
from tests.store.conftest import Backend, oci_backend, running_registry
from tests.store.registry_front import RegistryFront
from tests.unit.test_dircache import make_tree

MIB = 1024 * 1024
PASSWORD = "reg-password-DO-NOT-PRINT-5d1e"
OCI = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
UNREACHABLE_BOUND_SECONDS = 20  # four attempts, at most 5.25 s of backoff, plus Python's start


@pytest.fixture
def backend_oci(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return oci_backend(request, tmp_path)


def entry_json(key: str, scope: str, *blobs: bytes) -> bytes:
    refs = tuple(BlobRef(digest_of(blob), len(blob)) for blob in blobs)
    return Manifest("directory", key, scope, refs, {}).to_json()


def job_env(base_env: dict[str, str], home: Path) -> dict[str, str]:
    return {**base_env, "HOME": str(home), "JENKINS_URL": "https://ci.example.com/",
            "BRANCH_NAME": "main", "BRANCH_IS_PRIMARY": "true"}  # fmt: skip


def cli(workspace: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "ci_integration", *args], cwd=workspace,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def docker_config(home: Path, host: str, password: str) -> Path:
    (home / ".docker").mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"ci:{password}".encode()).decode()
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return home


def htpasswd_line(user: str, password: str) -> str:
    try:
        import bcrypt

        return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # libxcrypt's bcrypt, where Python still has the module
        except ImportError:
            crypt = None
    if crypt is None or crypt.METHOD_BLOWFISH not in crypt.methods:
        pytest.skip("no bcrypt to write an htpasswd file: pip install bcrypt")
    return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32))}"


def test_an_entry_is_a_tagged_oci_manifest_and_a_blob_a_registry_blob(backend_oci):
    store = backend_oci.open()
    assert store.description == backend_oci.url
    api = f"http://{store.host}/v2/{store.repository}"
    blob = os.urandom(1000)
    store.put_blob(digest_of(blob), blob)
    document = entry_json("deps/linux:1", "branch-main", blob)
    store.put_entry("branch-main", "deps/linux:1", document)
    store.touch_entry("branch-main", "deps/linux:1")

    tags = requests.get(f"{api}/tags/list", timeout=10).json()["tags"]
    [entry_tag] = [tag for tag in tags if tag.startswith("e-branch-main-")]
    assert sorted(tag[0] for tag in tags) == ["e", "u"]
    manifest = requests.get(f"{api}/manifests/{entry_tag}", headers=OCI, timeout=10).json()
    assert (manifest["artifactType"], manifest["config"]) == (ENTRY_ARTIFACT, EMPTY)
    [own, named] = manifest["layers"]
    assert (own["mediaType"], named["mediaType"]) == (ENTRY_LAYER, BLOB_LAYER)
    assert requests.get(f"{api}/blobs/{own['digest']}", timeout=10).content == document
    assert requests.get(f"{api}/blobs/{named['digest']}", timeout=10).content == blob
    assert manifest["annotations"]["io.ci-integration.key"] == "deps/linux:1"

    store.delete_entry("branch-main", "deps/linux:1")
    assert requests.get(f"{api}/tags/list", timeout=10).json()["tags"] in ([], None)
    assert store.list_entries() == [] and store.has_blob(digest_of(blob))


def test_prune_drops_entries_but_no_blob_and_an_entry_needs_its_blobs(backend_oci):
    store = backend_oci.open()
    shared, own = os.urandom(600_000), os.urandom(600_000)
    for data in (shared, own):
        store.put_blob(digest_of(data), data)
    store.put_entry("branch-main", "old", entry_json("old", "branch-main", shared, own))
    store.put_entry("branch-main", "new", entry_json("new", "branch-main", shared))
    # Another process, as `cache prune` is; even long after the grace period.
    later = time.time() + store.blob_grace_seconds + 60
    result = prune(backend_oci.open(), max_size=700_000, now=later)
    assert [e.key for e in result.removed_entries] == ["old"] and result.removed_blobs == 0
    assert store.has_blob(digest_of(shared)) and store.has_blob(digest_of(own))
    with pytest.raises(OSError, match="MANIFEST_BLOB_UNKNOWN"):
        store.put_entry("branch-main", "k", entry_json("k", "branch-main", b"never stored"))
    assert [e.key for e in store.list_entries()] == ["new"]


def test_entries_commit_while_other_jobs_upload_the_blobs_they_name(backend_oci):
    """distribution rewrites a blob's link file on every upload of it, and a manifest
    PUT that reads the file meanwhile is refused with DIGEST_INVALID (5 % of the PUTs
    here before the PUT was tried again): jobs saving shared pieces meet that."""
    store = backend_oci.open()
    shared = [os.urandom(1000) for _ in range(3)]
    for blob in shared:
        store.put_blob(digest_of(blob), blob)
    uploading, failures = threading.Event(), []

    def upload_again() -> None:
        other_job = backend_oci.open()
        while not uploading.is_set():
            for blob in shared:
                other_job.put_blob(digest_of(blob), blob)

    def commit(job: int) -> None:
        for number in range(60):
            key = f"job{job}-{number}"
            try:
                store.put_entry("branch-main", key, entry_json(key, "branch-main", *shared))
            except OSError as exc:
                failures.append(str(exc))

    uploaders = [threading.Thread(target=upload_again) for _ in range(4)]
    committers = [threading.Thread(target=commit, args=(job,)) for job in range(3)]
    for thread in uploaders + committers:
        thread.start()
    for thread in committers:
        thread.join()
    uploading.set()
    for thread in uploaders:
        thread.join()
    assert failures == []
    assert len(store.list_entries("branch-main")) == 180


def test_tags_for_long_and_odd_keys_stay_valid_and_distinct(backend_oci):
    store = backend_oci.open()
    long_scope = "branch-" + "x" * 93  # 100 characters, as long as a scope gets
    cases = [("branch-main", "k" * 511 + "1"), ("branch-main", "k" * 511 + "2"),
             ("branch-main", "a/b:c@d~e,f+g=h"), ("branch-main", "A.B_C-"),
             (long_scope, "k"), (long_scope + "y", "k"), (long_scope[:-1], "k")]  # fmt: skip
    documents = {(scope, key): entry_json(key, scope) for scope, key in cases}
    for (scope, key), document in documents.items():
        store.put_entry(scope, key, document)
    tags = store.api.tags("test")
    assert len(set(tags)) == len(cases) and all(TAG.fullmatch(tag) for tag in tags)
    assert sorted((e.scope, e.key) for e in store.list_entries()) == sorted(cases)
    for (scope, key), document in documents.items():
        in_scope = sorted(e.key for e in store.list_entries(scope))
        assert in_scope == sorted(k for s, k in cases if s == scope)
        assert store.get_entry(scope, key) == document


def test_tag_lists_are_read_page_by_page_and_refusals_retried(registry, base_env):
    with RegistryFront(registry.address) as front:
        store = OCIStore(front.address, "ci/pages", {})
        store.api.tags_page_size = 2
        for number in range(7):
            store.put_entry("branch-main", f"k{number}", entry_json(f"k{number}", "branch-main"))
        front.fail_next = [503, 429]  # then answered
        assert sorted(e.key for e in store.list_entries()) == [f"k{n}" for n in range(7)]
    pages = [path for method, path, _ in front.seen if "/tags/list" in path]
    assert len(pages) == 2 + 4 and "last=" in pages[-1]  # two refused, four pages of two


def test_a_bearer_token_is_fetched_with_the_docker_login(registry, tmp_path):
    with RegistryFront(registry.address, token="t0ken-for-tests") as front:
        env = {"DOCKER_CONFIG": str(docker_config(tmp_path, front.address, PASSWORD) / ".docker")}
        store = OCIStore(front.address, "ci/bearer", env)
        store.put_entry("branch-main", "k", entry_json("k", "branch-main"))
        assert [e.key for e in store.list_entries()] == ["k"]
    [(query, login)] = front.token_requests
    assert "scope=repository%3Aci%2Fbearer%3Apull%2Cpush" in query and "service=" in query
    assert login == "Basic " + base64.b64encode(f"ci:{PASSWORD}".encode()).decode()
    sent = {authorization for _, _, authorization in front.seen}
    assert sent == {None, "Bearer t0ken-for-tests"}  # anonymous first, then the token


def test_basic_auth_from_the_docker_config_and_no_secret_in_any_output(tmp_path, base_env):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_line("ci", PASSWORD) + "\n")
    auth = f"auth: {{htpasswd: {{realm: ci-test, path: '{htpasswd}'}}}}\n"
    with running_registry(tmp_path / "registry", auth) as registry:
        url = f"oci://{registry.address}/ci/basic"
        home = docker_config(tmp_path / "home", registry.address, PASSWORD)
        wrong = docker_config(tmp_path / "wrong", registry.address, "not-" + PASSWORD)
        workspace = make_tree(tmp_path / "job" / "data").parent
        store_args = ["data", "--key", "k", "--store", url]
        runs = [
            (home, ["cache", "save", *store_args, "--strict", "--json"]),
            (home, ["cache", "restore", *store_args, "--strict", "--json"]),
            (home, ["cache", "list", "--store", url, "--json"]),
            (home, ["cache", "prune", "--max-size", "1", "--protect", "none", "--store", url]),
            (wrong, ["cache", "restore", *store_args]),
            (tmp_path / "nobody", ["cache", "restore", *store_args, "--strict"]),
        ]
        outputs = [cli(workspace, job_env(base_env, h), "--debug", *args) for h, args in runs]
    assert [code for code, _ in outputs] == [0, 0, 0, 0, 0, 3]
    assert '"cache_hit_kind": "exact"' in outputs[1][1] and "removed 1 entries" in outputs[3][1]
    assert "warning: restored nothing for k" in outputs[4][1] and "refused" in outputs[4][1]
    assert "asks for a login" in outputs[5][1] and "docker login" in outputs[5][1]
    secrets = [PASSWORD, base64.b64encode(f"ci:{PASSWORD}".encode()).decode()]
    for _, output in outputs:
        assert not any(secret in output for secret in secrets), output


def test_an_unreachable_registry_warns_within_a_bounded_time(tmp_path, base_env):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"oci://127.0.0.1:{probe.getsockname()[1]}/x"
    restore = ["cache", "restore", "data", "--key", "k", "--store", url]
    for strict, (code, message) in ((False, (0, "warning: restored nothing for k: the")),
                                     (True, (3, "error: the"))):  # fmt: skip
        started = time.monotonic()
        returned, output = cli(tmp_path, job_env(base_env, tmp_path), *restore,
                               *(["--strict"] if strict else []))  # fmt: skip
        assert time.monotonic() - started < UNREACHABLE_BOUND_SECONDS
        assert returned == code and f"{message} registry did not answer" in output, output
        assert "cannot connect or the connection broke, 4 attempts" in output


def test_a_large_blob_goes_in_chunks(backend_oci, monkeypatch):
    store = backend_oci.open()
    store.api.chunked_upload_threshold, store.api.upload_chunk = 5 * MIB, 5 * MIB
    sent, request = [], store.api.client.request

    def recorded(method: str, *args, **kwargs):
        sent.append(method)
        return request(method, *args, **kwargs)

    monkeypatch.setattr(store.api.client, "request", recorded)
    data = os.urandom(12 * MIB)
    store.put_blob(digest_of(data), data)
    assert sent.count("PATCH") == 3 and store.get_blob(digest_of(data)) == data


def test_which_registries_speak_plain_http_and_whose_login_is_used(tmp_path):
    assert all(plain_http(h, {}) for h in ("127.0.0.1:5000", "127.9.9.9", "localhost:1", "[::1]:5"))
    assert not plain_http("registry.example.com", {}) and not plain_http("10.0.0.1:5000", {})
    assert plain_http("registry.example.com", {"CI_INTEGRATION_REGISTRY_INSECURE": "1"})
    home = docker_config(tmp_path, "https://Registry.Example.com/v1/", PASSWORD)
    assert docker_login("registry.example.com", {"HOME": str(home)}) == ("ci", PASSWORD)
    assert docker_login("other.example.com", {"HOME": str(home)}) is None
    assert docker_login("registry.example.com", {}) is None


def test_a_login_kept_by_a_credential_helper_is_used(tmp_path, monkeypatch):
    """``credHelpers`` and ``credsStore`` name a docker-credential-* program, found on
    the PATH and run with the job's environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-test"
    helper.write_text('#!/bin/sh\nread host\n[ "$1" = get ] && [ "$host" = "$WANTED" ] && '
                      f'echo \'{{"Username": "ci", "Secret": "{PASSWORD}"}}\' && exit 0\n'
                      'echo "credentials not found in native keychain"; exit 1\n')  # fmt: skip
    helper.chmod(0o755)
    config = tmp_path / "docker"
    config.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    env = {"DOCKER_CONFIG": str(config), "PATH": f"{bin_dir}:/usr/bin:/bin",
           "WANTED": "registry.example.com"}  # fmt: skip
    (config / "config.json").write_text(
        json.dumps({"credHelpers": {"registry.example.com": "test"}})
    )
    assert docker_login("registry.example.com", env) == ("ci", PASSWORD)
    assert docker_login("other.example.com", env) is None
    (config / "config.json").write_text(json.dumps({"credsStore": "test"}))
    assert docker_login("registry.example.com", env) == ("ci", PASSWORD)
    assert docker_login("other.example.com", env) is None  # the helper has none: anonymous


@pytest.mark.parametrize(
    ("url", "message"),
    [(f"oci://ci:{PASSWORD}@registry.example.com/x", "login in the docker config"),
     ("oci://registry.example.com/Upper/Case", "lowercase"),
     ("oci://registry.example.com/", "lowercase"),
     ("oci://registry.example.com/x?token=abc", "login in the docker config")],
)  # fmt: skip
def test_bad_urls_are_usage_errors_that_quote_no_secret(url, message):
    with pytest.raises(UsageError, match=message) as caught:
        open_store(url, {})
    assert PASSWORD not in str(caught.value) and "abc" not in str(caught.value)
