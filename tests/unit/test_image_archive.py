"""A kept image relabelled for a new build: same layers, new config, a layout that names it."""

from __future__ import annotations

import hashlib
import json

import pytest

from ci_integration.errors import CacheError
from ci_integration.images.image_archive import Loadable, relabelled

LAYERS = [("aa" * 32, 1000), ("bb" * 32, 20)]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(data: bytes) -> str:
    return "blobs/sha256/" + digest(data).removeprefix("sha256:")


def config_with(labels: dict[str, str] | None) -> bytes:
    document = {"architecture": "amd64", "config": {"Cmd": ["/app"], "Labels": labels},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "cc" * 32]},
                "moby.buildkit.cache.v0": "kept"}  # fmt: skip
    return json.dumps(document).encode()


def descriptor(data: bytes, media_type: str, **annotations: str) -> dict:
    found = {"mediaType": media_type, "digest": digest(data), "size": len(data)}
    return {**found, "annotations": annotations} if annotations else found


def test_a_classic_image_gets_the_labels_and_keeps_the_rest_of_its_config():
    image = Loadable(config_with({"keep": "1", "revision": "old"}), LAYERS, ["app:stage"])

    copy = relabelled(image, {"revision": "new", "created": "now"}, ["app:1"])

    document = json.loads(copy.config)
    assert document["config"]["Labels"] == {"keep": "1", "revision": "new", "created": "now"}
    assert document["config"]["Cmd"] == ["/app"]
    assert document["moby.buildkit.cache.v0"] == "kept"
    assert copy.layers == LAYERS and list(copy.tags) == ["app:1"]
    assert copy.index is None


def test_an_image_without_labels_gets_them():
    copy = relabelled(Loadable(config_with(None), LAYERS, []), {"a": "b"}, ["app:1"])

    assert json.loads(copy.config)["config"]["Labels"] == {"a": "b"}


def test_an_oci_index_names_the_new_config_and_leaves_the_attestation_out():
    config = config_with({"revision": "old"})
    manifest = json.dumps({"schemaVersion": 2, "config": descriptor(config, "config"),
                           "layers": []}).encode()  # fmt: skip
    statement = b'{"predicate": {}}'
    attestation = json.dumps({"schemaVersion": 2, "config": descriptor(statement, "in-toto"),
                              "layers": []}).encode()  # fmt: skip
    top = json.dumps({"schemaVersion": 2, "manifests": [
        descriptor(manifest, "manifest"),
        descriptor(attestation, "manifest", **{"vnd.docker.reference.type": "attestation"}),
    ]}).encode()  # fmt: skip
    files = {blob_path(b): b for b in (config, manifest, statement, attestation, top)}
    index = {"manifests": [descriptor(top, "index", **{"io.containerd.image.name": "x"})]}

    copy = relabelled(Loadable(config, LAYERS, ["app:stage"], index, files), {"revision": "new"},
                      ["app:1"])  # fmt: skip

    (new_top,) = copy.index["manifests"]
    assert "annotations" not in new_top and new_top["mediaType"] == "index"
    new_index = json.loads(copy.layout_files[blob_path_of(new_top)])
    (only,) = new_index["manifests"]
    new_manifest = json.loads(copy.layout_files[blob_path_of(only)])
    assert new_manifest["config"]["digest"] == digest(copy.config)
    assert new_manifest["config"]["size"] == len(copy.config)
    assert json.loads(copy.layout_files[blob_path(copy.config)])["config"]["Labels"] == {
        "revision": "new"
    }
    assert new_top["digest"] == digest(copy.layout_files[blob_path_of(new_top)])


def test_a_layout_that_does_not_name_the_config_is_refused():
    config = config_with({})
    other = json.dumps({"schemaVersion": 2, "config": descriptor(b"{}", "config")}).encode()
    index = {"manifests": [descriptor(other, "manifest")]}

    with pytest.raises(CacheError, match="does not name its config"):
        relabelled(Loadable(config, LAYERS, [], index, {blob_path(other): other}), {}, ["a:1"])


def blob_path_of(found: dict) -> str:
    return "blobs/sha256/" + found["digest"].removeprefix("sha256:")
