"""Every store backend behind one fixture, each against a real server where it has
one (S3: moto's server on 127.0.0.1; OCI: Debian's docker-registry on 127.0.0.1). A
new backend is one more entry in BACKENDS: a function giving its URL and the
environment a job needs to reach it."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from ci_integration import context
from ci_integration.store import Store, open_store
from ci_integration.store.base import digest_of
from tests.store.gha_backends import (  # noqa: F401 (fixtures the gha backends use)
    act_service,
    azurite,
    gha_v1_backend,
    gha_v2_backend,
    twirp_service,
)
from tests.store.jenkins_backends import jenkins_backend, jenkins_contract_front  # noqa: F401
from tests.support import daemons

# Recognisable in any output: no log line, message or traceback may show them.
FAKE_ACCESS_KEY = "AKIAFAKEKEYID4TESTS"
FAKE_SECRET_KEY = "fake-secret-key-DO-NOT-PRINT-7f3a9c"
FAKE_SESSION_TOKEN = "fake-session-token-DO-NOT-PRINT-1b2e"
BUCKET_PREFIX = "ci/cache"
REGISTRY_START_SECONDS = 20


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    url: str  # what --store takes
    env: dict[str, str]  # what a job needs besides: endpoint, credentials
    # Wraps the store where the backend's own API cannot do what a test does behind
    # its back (a registry refuses bytes that do not match their digest).
    faults: Callable[[Store], Store] | None = None
    # Whether the backend can list and delete entries and blobs: the GitHub cache can
    # do neither, and tests of listing, pruning or blobs removed behind its back skip.
    can_list: bool = True

    def open(self) -> Store:
        # The job's context, which the jenkins:// store asks for to find its builds.
        store = open_store(self.url, self.env, functools.partial(context.detect, self.env))
        return self.faults(store) if self.faults else store


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


@dataclasses.dataclass(frozen=True)
class Registry:
    address: str  # HOST:PORT
    root: Path  # its storage folder


@contextlib.contextmanager
def running_registry(folder: Path, extra_config: str = "") -> Iterator[Registry]:
    """Debian's docker-registry (the CNCF distribution server) on a free port of
    127.0.0.1, with deletes enabled; stopped by its pid at the end."""
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not os.access(binary, os.X_OK):
        if os.environ.get("CI") == "true":  # a green CI means the backend was tested
            pytest.fail("no docker-registry: apt-get install docker-registry")
        pytest.skip("no docker-registry: apt-get install docker-registry")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: info, accesslog: {disabled: true}}\n"  # info: the port it listens on
        f"storage: {{filesystem: {{rootdirectory: '{folder / 'data'}'}}, "
        "delete: {enabled: true}}\n"
        "http: {addr: '127.0.0.1:0'}\n" + extra_config
    )
    started = daemons.running([binary, "serve", str(config)], folder / "registry.log",
                              r"listening on (127\.0\.0\.1:\d+)", what="docker-registry",
                              start_seconds=REGISTRY_START_SECONDS)  # fmt: skip
    with started as found:
        yield Registry(found[1], folder / "data")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as started:
        yield started


class RegistryDiskFault:
    """The OCI store, except that ``put_blob`` of bytes that do not match the digest
    overwrites the blob's file in the registry's storage, as a disk fault would."""

    def __init__(self, store: Store, registry: Registry, overwritten: list[Path]) -> None:
        self._store, self._registry, self._overwritten = store, registry, overwritten

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def put_blob(self, digest: str, data: bytes) -> None:
        if digest_of(data) == digest:
            return self._store.put_blob(digest, data)
        hexdigest = digest.removeprefix("sha256:")
        blobs = self._registry.root / "docker" / "registry" / "v2" / "blobs" / "sha256"
        path = blobs / hexdigest[:2] / hexdigest / "data"
        path.write_bytes(data)
        self._overwritten.append(path)
        return None


def local_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend("local", f"file://{tmp_path / 'store'}", {})


def s3_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    # Asked for here, so that tests of other backends start no server.
    name = request.getfixturevalue("bucket")
    return Backend("s3", f"s3://{name}/{BUCKET_PREFIX}", request.getfixturevalue("s3_env"))


def oci_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    registry: Registry = request.getfixturevalue("registry")
    overwritten: list[Path] = []
    # Blob files are shared by every repository: a later test must find no fault.
    request.addfinalizer(lambda: [path.unlink(missing_ok=True) for path in overwritten])
    url = f"oci://{registry.address}/ci/test-{uuid.uuid4().hex[:12]}"
    return Backend("oci", url, {}, lambda store: RegistryDiskFault(store, registry, overwritten))


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "local": local_backend,
    "s3": s3_backend,
    "oci": oci_backend,
    "gha-v1": gha_v1_backend,
    "gha-v2": gha_v2_backend,
    "jenkins": jenkins_backend,
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()
