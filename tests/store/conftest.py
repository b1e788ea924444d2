"""Every store backend behind one fixture, each against a real server where it has
one (S3: moto's server on 127.0.0.1). A new backend is one more entry in BACKENDS:
a function giving its URL and the environment a job needs to reach it."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from ci_integration.store import Store, open_store

# Recognisable in any output: no log line, message or traceback may show them.
FAKE_ACCESS_KEY = "AKIAFAKEKEYID4TESTS"
FAKE_SECRET_KEY = "fake-secret-key-DO-NOT-PRINT-7f3a9c"
FAKE_SESSION_TOKEN = "fake-session-token-DO-NOT-PRINT-1b2e"
BUCKET_PREFIX = "ci/cache"


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    url: str  # what --store takes
    env: dict[str, str]  # what a job needs besides: endpoint, credentials

    def open(self) -> Store:
        return open_store(self.url, self.env)


@pytest.fixture(autouse=True)
def _no_aws_config_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes in its mapping may reach botocore: no profile, no
    config file, and never the instance metadata service."""
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, in a thread of this process, on a free port of 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str) -> dict[str, str]:
    return {
        "CI_INTEGRATION_S3_ENDPOINT": s3_endpoint,
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
        "AWS_SESSION_TOKEN": FAKE_SESSION_TOKEN,
        "AWS_REGION": "us-east-1",
    }


def s3_admin(env: dict[str, str]):
    """A plain client, for what a test does behind the store's back."""
    return boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    ).client("s3", endpoint_url=env["CI_INTEGRATION_S3_ENDPOINT"])


@pytest.fixture
def bucket(s3_env: dict[str, str]) -> Iterator[str]:
    """A fresh bucket, emptied and removed after the test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    client = s3_admin(s3_env)
    client.create_bucket(Bucket=name)
    yield name
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def local_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend("local", f"file://{tmp_path / 'store'}", {})


def s3_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    # Asked for here, so that tests of other backends start no server.
    name = request.getfixturevalue("bucket")
    return Backend("s3", f"s3://{name}/{BUCKET_PREFIX}", request.getfixturevalue("s3_env"))


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "local": local_backend,
    "s3": s3_backend,
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()
