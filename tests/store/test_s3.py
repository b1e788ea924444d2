"""What only the S3 store does, against moto's server on 127.0.0.1: multipart
uploads, its layout, lookups that renew a blob's age, sweeping, and how trouble
reaches the job (one line, no credentials, a bounded wait)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ResponseStreamingError

from ci_integration.cli import main
from ci_integration.errors import UsageError
from ci_integration.store import open_store
from ci_integration.store import s3 as s3_module
from ci_integration.store.base import digest_of
from ci_integration.store.s3 import S3Store
from tests.store.conftest import (
    BUCKET_PREFIX,
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    FAKE_SESSION_TOKEN,
    s3_admin,
)
from tests.unit.test_dircache import make_tree

MIB = 1024 * 1024
# Connection refused: four attempts, at most 5.25 s of backoff, plus Python's start.
UNREACHABLE_BOUND_SECONDS = 20


@pytest.fixture
def store(bucket, s3_env) -> S3Store:
    return S3Store(bucket, BUCKET_PREFIX, s3_env)


def job_env(base_env: dict, s3_env: dict) -> dict[str, str]:
    return {**base_env, **s3_env, "JENKINS_URL": "https://ci.example.com/",
            "BRANCH_NAME": "main", "BRANCH_IS_PRIMARY": "true"}  # fmt: skip


def cli(workspace: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ci_integration", *args],
        cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen) -> tuple[int, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out + err


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_blob_above_the_threshold_goes_in_parts(bucket, s3_env):
    store = S3Store(bucket, BUCKET_PREFIX, s3_env)
    store.multipart_threshold = 5 * MIB
    data = os.urandom(12 * MIB)
    digest = digest_of(data)
    store.put_blob(digest, data)
    admin = s3_admin(s3_env)
    head = admin.head_object(Bucket=bucket, Key=f"{BUCKET_PREFIX}/blobs/sha256/{digest[7:]}")
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 2 MiB
    assert store.get_blob(digest) == data
    assert [(b.digest, b.size) for b in store.list_blobs()] == [(digest, len(data))]
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_layout_and_last_use_sidecar(store, bucket, s3_env):
    store.put_blob(digest_of(b"x"), b"x")
    store.put_entry("branch-main", "deps/linux:1", b"{}")
    store.touch_entry("branch-main", "deps/linux:1")
    admin = s3_admin(s3_env)
    keys = sorted(item["Key"] for item in admin.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [
        f"{BUCKET_PREFIX}/blobs/sha256/{digest_of(b'x')[7:]}",
        f"{BUCKET_PREFIX}/entries/branch-main/deps%2Flinux%3A1.json",
        f"{BUCKET_PREFIX}/entries/branch-main/deps%2Flinux%3A1.used",
    ]
    assert [e.key for e in store.list_entries()] == ["deps/linux:1"]
    store.delete_entry("branch-main", "deps/linux:1")
    assert store.list_entries() == [] and store.get_entry("branch-main", "deps/linux:1") is None


def test_stores_under_other_prefixes_do_not_see_each_other(bucket, s3_env):
    top, nested = S3Store(bucket, "", s3_env), S3Store(bucket, "team/a/", s3_env)
    top.put_entry("branch-main", "k", b"top")
    nested.put_entry("branch-main", "k", b"nested")
    assert top.get_entry("branch-main", "k") == b"top"
    assert [e.key for e in nested.list_entries()] == ["k"]
    assert nested.get_entry("branch-main", "k") == b"nested"


def test_a_lookup_renews_an_old_blob(store, monkeypatch):
    data = b"referenced again by a later save"
    store.put_blob(digest_of(data), data)
    [before] = store.list_blobs()
    time.sleep(1.2)  # S3 keeps whole seconds
    monkeypatch.setattr(s3_module, "REFRESH_AFTER_SECONDS", 0.5)
    assert store.has_blob(digest_of(data))
    [after] = store.list_blobs()
    assert after.modified > before.modified and store.get_blob(digest_of(data)) == data
    assert not store.has_blob(digest_of(b"never stored"))


def test_sweep_aborts_stale_uploads_and_drops_orphan_last_use_marks(store, bucket, s3_env):
    admin = s3_admin(s3_env)
    admin.create_multipart_upload(Bucket=bucket, Key=f"{BUCKET_PREFIX}/blobs/sha256/{'a' * 64}")
    store.put_entry("branch-main", "kept", b"{}")
    store.touch_entry("branch-main", "kept")
    store.touch_entry("branch-main", "pruned-meanwhile")  # a restore that met a prune

    def names() -> list[str]:
        listed = admin.list_objects_v2(Bucket=bucket)["Contents"]
        return sorted(item["Key"].rpartition("/")[2] for item in listed)

    # moto dates every upload 2010, so the upload may already go in this sweep.
    removed = store.sweep()
    assert "pruned-meanwhile.used" in names()  # younger than the grace period
    store.blob_grace_seconds = 0
    time.sleep(1.2)  # S3 keeps whole seconds
    removed += store.sweep()
    assert removed == 2 and names() == ["kept.json", "kept.used"]
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_blob_cut_off_mid_read_is_fetched_again(store, monkeypatch):
    data = os.urandom(100_000)
    store.put_blob(digest_of(data), data)
    real_get = store._client.get_object
    calls = []

    class CutBody:
        def read(self, *args):
            raise ResponseStreamingError(error="connection reset by peer")

        def close(self):
            pass

    def flaky_get(**kwargs):
        calls.append(kwargs["Key"])
        return {"Body": CutBody()} if len(calls) == 1 else real_get(**kwargs)

    monkeypatch.setattr(store._client, "get_object", flaky_get)
    assert store.get_blob(digest_of(data)) == data and len(calls) == 2


def test_a_refusal_is_one_line_without_the_service_message(store, monkeypatch):
    def refuse(**kwargs):
        error = {"Code": "SignatureDoesNotMatch", "Message": f"quoting {FAKE_SECRET_KEY}"}
        raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}, "Get")

    monkeypatch.setattr(store._client, "get_object", refuse)
    with pytest.raises(PermissionError) as caught:
        store.get_entry("branch-main", "k")
    message = str(caught.value)
    assert "SignatureDoesNotMatch" in message and FAKE_SECRET_KEY not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"s3://{FAKE_ACCESS_KEY}:{FAKE_SECRET_KEY}@bucket/p", "credentials in AWS_"),
        ("s3:///just/a/path", "no bucket name"),
        ("s3://bucket:443/p", "no bucket name"),
        ("s3://bucket/p?X-Amz-Signature=abc", "credentials in AWS_"),
    ],
)
def test_bad_urls_are_usage_errors_that_quote_no_secret(url, message, s3_env):
    with pytest.raises(UsageError, match=message) as caught:
        open_store(url, s3_env)
    assert FAKE_SECRET_KEY not in str(caught.value) and "abc" not in str(caught.value)


def test_a_bad_endpoint_is_a_usage_error(s3_env):
    env = {**s3_env, "CI_INTEGRATION_S3_ENDPOINT": "ftp://example.invalid"}
    with pytest.raises(UsageError, match="CI_INTEGRATION_S3_ENDPOINT must be http"):
        open_store("s3://bucket", env)


def test_a_missing_bucket_is_named(s3_env, base_env, tmp_path, monkeypatch, capsys):
    make_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    env, url = job_env(base_env, s3_env), "s3://no-such-bucket-here/ci"
    for action in ("save", "restore"):
        assert main(["cache", action, "data", "--key", "k", "--store", url], env=env) == 0
        err = capsys.readouterr().err
        assert "warning:" in err and "S3 bucket 'no-such-bucket-here' does not exist" in err
    strict = ["cache", "restore", "data", "--key", "k", "--store", url, "--strict"]
    assert main(strict, env=env) == 3
    assert "'no-such-bucket-here' does not exist" in capsys.readouterr().err


def test_an_unreachable_endpoint_warns_within_a_bounded_time(s3_env, base_env, tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = {**job_env(base_env, s3_env), "CI_INTEGRATION_S3_ENDPOINT": endpoint}
    restore = ["cache", "restore", "data", "--key", "k", "--store", "s3://cache/ci"]
    started = time.monotonic()
    lenient, strict = cli(tmp_path, env, *restore), cli(tmp_path, env, *restore, "--strict")
    (lenient_code, lenient_out), (strict_code, strict_out) = finish(lenient), finish(strict)
    elapsed = time.monotonic() - started
    assert lenient_code == 0 and "warning: restored nothing for k" in lenient_out
    assert "S3 did not answer" in lenient_out and "EndpointConnectionError" in lenient_out
    assert strict_code == 3 and "error: S3 did not answer" in strict_out
    assert elapsed < UNREACHABLE_BOUND_SECONDS, elapsed


def test_credentials_never_appear_in_any_output(bucket, s3_env, base_env, tmp_path):
    env = job_env(base_env, s3_env)
    make_tree(tmp_path / "data")
    url = f"s3://{bucket}/{BUCKET_PREFIX}"
    unreachable = {**env, "CI_INTEGRATION_S3_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    runs = [
        (env, ["cache", "save", "data", "--key", "k", "--store", url, "--json"]),
        (env, ["cache", "restore", "data", "--key", "k", "--store", url, "--json"]),
        (env, ["cache", "list", "--store", url, "--json"]),
        (env, ["cache", "prune", "--max-age", "1s", "--store", url, "--json"]),
        (env, ["cache", "restore", "data", "--key", "k", "--store", "s3://gone-bucket/x",
               "--strict"]),
        (unreachable, ["cache", "save", "data", "--key", "k", "--store", url, "--strict"]),
        (env, ["cache", "save", "data", "--key", "k",
               "--store", f"s3://{FAKE_ACCESS_KEY}:{FAKE_SECRET_KEY}@{bucket}/x"]),
    ]  # fmt: skip
    outputs = []
    for run_env, args in runs:
        code, output = finish(cli(tmp_path, run_env, "--debug", *args))
        outputs.append((code, output))
    assert [code for code, _ in outputs] == [0, 0, 0, 0, 3, 3, 2]
    assert "Traceback" in outputs[4][1]  # --debug shows the chained botocore error
    for _, output in outputs:
        for secret in (FAKE_SECRET_KEY, FAKE_SESSION_TOKEN, FAKE_ACCESS_KEY):
            assert secret not in output, output


def test_description_names_the_place_and_nothing_secret(store, s3_env):
    assert store.description.startswith(f"s3://{store.bucket}/{BUCKET_PREFIX}/ at http://")
    assert FAKE_SECRET_KEY not in store.description
