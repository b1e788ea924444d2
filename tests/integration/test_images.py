"""Images handed from job to job through the store, with no registry, on every engine
of the matrix: the classic image store's archives and the containerd store's OCI
layouts, whose image IDs are their index's digest."""

from __future__ import annotations

import io
import json

import pytest

from ci_integration.cli import main
from ci_integration.store.local import LocalStore
from tests.integration.test_build import run_build, wipe
from tests.support import base_images

pytestmark = pytest.mark.engine


def cli_json(argv: list[str], env, capsys) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"], env=env) == 0
    return json.loads(capsys.readouterr().out)


def build_from(client, base: str, tag: str, line: str) -> str:
    dockerfile = f"FROM {base}\nRUN {line}\n".encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    return tag


@pytest.fixture
def env(tmp_path, base_env, engine) -> dict[str, str]:
    return {**base_env, **engine.env, "CI_INTEGRATION_DOCKER": engine.docker,
            "CI_INTEGRATION_PROVIDER": "local", "CI_INTEGRATION_BRANCH": "main",
            "CI_INTEGRATION_CACHE_DIR": str(tmp_path / "store")}  # fmt: skip


def test_job_b_builds_from_job_a_image_without_a_registry(
    engine, buildkit_builder, env, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    docker_client = engine.client
    wipe(docker_client)
    busybox = base_images.busybox_image(docker_client)
    image_a = build_from(docker_client, busybox, "ci-integration-test/image-a:0", "echo a > /a")
    image_b = build_from(docker_client, image_a, "ci-integration-test/image-b:0", "echo b > /b")
    layers_a = len(docker_client.images.get(image_a).attrs["RootFS"]["Layers"])
    saved = cli_json(["image", "save", image_a, image_b], env, capsys)["images"]
    assert [s["new_layers"] for s in saved] == [layers_a, 1]  # image-b adds one layer

    wipe(docker_client)
    project = tmp_path / "job-b"
    project.mkdir()
    (project / "Dockerfile").write_text(f"FROM {image_a}\nRUN cat /a > /from-a\n")
    report = run_build(project, env, buildkit_builder, capsys=capsys)
    assert report["failed_stage"] is None
    out = docker_client.containers.run("ci-integration-test/app:1", ["cat", "/from-a"],
                                       remove=True)  # fmt: skip
    assert out == b"a\n"

    # image-a's layers are on the engine now: loading image-b moves only its own, and
    # it comes back as the very image it was.
    loaded = cli_json(["image", "load", image_b], env, capsys)["images"]
    assert loaded[0]["hit"] == "exact" and loaded[0]["loaded_layers"] == 1
    assert docker_client.images.get(image_b).id == saved[1]["id"]
    missing = cli_json(["image", "load", "ci-integration-test/nope:1"], env, capsys)["images"]
    assert missing == [{"image": "ci-integration-test/nope:1", "hit": "miss"}]


@pytest.mark.xdist_group("debian")  # one worker imports the large base image
def test_ten_images_on_one_large_base_store_it_once(engine, env, tmp_path, capsys,
                                                    monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    docker_client = engine.client
    base = base_images.debian_image(docker_client)
    images = [build_from(docker_client, base, f"ci-integration-test/ten:{n}", f"echo {n} > /n")
              for n in range(10)]  # fmt: skip
    saved = cli_json(["image", "save", *images], env, capsys)["images"]
    assert [s["new_layers"] for s in saved[1:]] == [1] * 9
    stored = sum(blob.size for blob in LocalStore(tmp_path / "store").list_blobs())
    one_image = docker_client.images.get(images[0]).attrs["Size"]
    # The base is ~370 MB unpacked; stored once and compressed it is well under one image.
    assert stored < one_image
    assert sum(s["uploaded_bytes"] for s in saved[1:]) < 0.01 * stored
    for image in images:
        docker_client.images.remove(image)
