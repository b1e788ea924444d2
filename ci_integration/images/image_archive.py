"""The archives of ``docker save`` and ``docker load``, in the formats engines speak.

What engines write:
- before 25, and 25+ on the classic store alike: ``manifest.json`` names the config
  and the layer files, whose sha256 is the layer's diff ID (uncompressed). 25+ lays
  the files out as an OCI layout (``blobs/sha256/...``, ``index.json``) as well.
- the containerd image store: an OCI layout whose image ID is the digest of the top
  index, with compressed layers (their digest is not the diff ID) and attestation
  manifests beside the image's own.

What engines read:
- the classic store: ``manifest.json``, config and layer files. A layer the engine
  holds (by its chain ID) may be left out of the archive.
- the containerd store: an OCI layout. It does not take a ``manifest.json`` archive
  that leaves a layer out, but an OCI layout may leave out any layer whose chain the
  engine holds (it unpacks from what it has).

An image is kept as its config, its layer files (by the sha256 of their bytes, in
diff ID order) and, when the engine wrote an OCI index, the small files of the layout
(index, manifests, attestations), so that the containerd store gets the image back
under the very ID it had.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from ci_integration.archive.pack import Packer, fill_from
from ci_integration.engine.images import stream_reader
from ci_integration.errors import CacheError

MAX_SMALL_MEMBER = 1024 * 1024
PIECE_SIZE = 4 * 1024 * 1024
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
# What the containerd store reads an image's name from, and the OCI spec's own.
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
# Files of the layout that a load writes anew, never from what was kept.
_REWRITTEN = ("index.json", "oci-layout", "manifest.json", "repositories")


@dataclasses.dataclass
class ExportedImage:
    """One image out of a ``docker save`` stream."""

    config: bytes
    diff_ids: list[str]
    layers: list[str]  # the sha256 (hex) of each layer file, in diff ID order
    packed: dict[str, tuple[list[int], int]]  # file sha256 -> (pieces, size)
    index: dict[str, Any] | None  # the OCI index.json, when the engine wrote one
    layout_files: dict[str, bytes]  # small files of the OCI layout, by path


def read_export(chunks: Iterable[bytes], packer: Packer) -> ExportedImage:
    """Every file of a ``docker save`` stream of one image, large ones as pieces.

    The layers come before the manifest that names them, so every large file is
    packed under its own sha256; small files are kept aside until the end.
    """
    packed: dict[str, tuple[list[int], int]] = {}
    by_path: dict[str, str] = {}
    small: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream_reader(chunks), mode="r|") as archive:
        for member in archive:
            if not member.isfile():
                continue
            # typeshed says IO[bytes]; it is a tarfile.ExFileObject, an io.BufferedReader.
            source = cast("io.BufferedIOBase | None", archive.extractfile(member))
            assert source is not None
            if member.size <= MAX_SMALL_MEMBER:
                small[member.name] = source.read()
                continue
            digest, pieces = pack_file(source, member.size, packer)
            packed[digest] = (pieces, member.size)
            by_path[member.name] = digest
    try:
        (entry,) = json.loads(small["manifest.json"])
        config = small[entry["Config"]]
        diff_ids = [str(d) for d in json.loads(config)["rootfs"]["diff_ids"]]
        layers = []
        for name in entry["Layers"]:
            if name in small:  # a layer small enough to have been kept aside
                digest, pieces = pack_file(io.BytesIO(small[name]), len(small[name]), packer)
                packed[digest] = (pieces, len(small[name]))
                by_path[name] = digest
            layers.append(by_path[name])
        index = json.loads(small["index.json"]) if "index.json" in small else None
    except (KeyError, ValueError, TypeError) as exc:
        raise CacheError(f"unsupported export format: {exc!r}") from None
    if len(layers) != len(diff_ids):
        raise CacheError("unsupported export format: the layers do not match the config")
    layer_paths = set(entry["Layers"])
    layout_files = {}
    if index is not None:
        for path, data in small.items():
            if path not in layer_paths and path not in _REWRITTEN:
                layout_files[path] = data
        large_extra = [path for path in by_path if path not in layer_paths]
        if large_extra:
            raise CacheError(f"unsupported export format: {large_extra[0]} is over 1 MiB")
    return ExportedImage(config, diff_ids, layers, packed, index, layout_files)


def pack_file(source: io.BufferedIOBase, size: int, packer: Packer) -> tuple[str, list[int]]:
    """``size`` bytes of ``source`` as pieces; their sha256 (hex) and piece indexes."""
    digest = hashlib.sha256()
    pieces: list[int] = []
    readinto = fill_from(source.readinto)

    def hashing_readinto(view: memoryview) -> int:
        count = readinto(view)
        digest.update(view[:count])
        return count

    left = size
    while left > 0 and (piece := packer.read_piece(hashing_readinto, min(left, PIECE_SIZE))):
        pieces.append(piece[0])
        left -= piece[1]
    return digest.hexdigest(), pieces


# The load side.


@dataclasses.dataclass(frozen=True)
class Loadable:
    """An image to load under ``tags``: its config, its layer files in diff ID order
    (sha256 hex and size), and what is kept of its OCI layout, if anything."""

    config: bytes
    layers: Sequence[tuple[str, int]]
    tags: Sequence[str]
    index: Mapping[str, Any] | None = None
    layout_files: Mapping[str, bytes] = dataclasses.field(default_factory=dict)


LayerFiles = Sequence[tuple[str, int, Iterable[memoryview]]]
Buffer = bytes | memoryview  # what an archive stream is made of


def relabelled(image: Loadable, labels: Mapping[str, str], tags: Sequence[str]) -> Loadable:
    """``image`` with ``labels`` added to its config, under ``tags``: the same layers,
    so it loads with no layer file; a new config, so a new image ID. A kept OCI layout
    is rewritten to name the new config (the old image's attestations are left out:
    they name the old manifest)."""
    document = json.loads(image.config)
    settings = document.get("config") or {}
    document["config"] = {**settings, "Labels": {**(settings.get("Labels") or {}), **labels}}
    config = json.dumps(document, separators=(",", ":")).encode()
    if image.index is None:
        return Loadable(config, image.layers, tags)
    files = {**image.layout_files, f"blobs/sha256/{_sha256(config)}": config}
    (top,) = image.index["manifests"]
    rewritten = _naming_config(top, files, f"sha256:{_sha256(image.config)}", config)
    if rewritten is None:
        raise CacheError("the kept OCI layout of the image does not name its config")
    return Loadable(config, image.layers, tags, {"manifests": [rewritten]}, files)


def _naming_config(
    descriptor: Mapping[str, Any], files: dict[str, bytes], old_config: str, config: bytes
) -> dict[str, Any] | None:
    """The descriptor of a copy of the manifest or index ``descriptor`` names, in which
    the manifest of config ``old_config`` names ``config`` instead (the copies added to
    ``files``); None when none of it names ``old_config``."""
    path = f"blobs/sha256/{str(descriptor.get('digest', '')).removeprefix('sha256:')}"
    if path not in files:
        return None
    document = json.loads(files[path])
    if "manifests" in document:
        named = [_naming_config(d, files, old_config, config) for d in document["manifests"]]
        document["manifests"] = [found for found in named if found is not None]
        if not document["manifests"]:
            return None
    elif (document.get("config") or {}).get("digest") == old_config:
        document["config"] = {
            **document["config"],
            "digest": f"sha256:{_sha256(config)}",
            "size": len(config),
        }
    else:
        return None
    blob = json.dumps(document, separators=(",", ":")).encode()
    files[f"blobs/sha256/{_sha256(blob)}"] = blob
    kept = {key: value for key, value in descriptor.items() if key != "annotations"}
    return {**kept, "digest": f"sha256:{_sha256(blob)}", "size": len(blob)}


def docker_archive(images: Sequence[Loadable], layers: LayerFiles) -> Iterator[Buffer]:
    """A ``manifest.json`` archive, for the classic store: only ``layers`` (sha256 hex,
    size, bytes) are in it; every other layer must be on the engine already."""
    manifest: list[dict[str, Any]] = [
        {
            "Config": f"{_sha256(image.config)}.json",
            "RepoTags": list(image.tags),
            "Layers": [f"{digest}/layer.tar" for digest, _ in image.layers],
        }
        for image in images
    ]
    yield from _member("manifest.json", json.dumps(manifest).encode())
    for image, entry in zip(images, manifest, strict=True):
        yield from _member(entry["Config"], image.config)
    for digest, size, data in layers:
        yield from _streamed_member(f"{digest}/layer.tar", size, data)
    yield _END


def oci_layout(images: Sequence[Loadable], layers: LayerFiles) -> Iterator[Buffer]:
    """An OCI layout, for the containerd store: each image under each of its tags,
    from its own index where one was kept (so its ID is the one it had), else from a
    manifest made here; only ``layers`` of the layer files are in it."""
    written: set[str] = set()
    descriptors = []
    files: list[tuple[str, bytes]] = []
    for image in images:
        top, own_files = _top_descriptor(image)
        files += own_files
        for tag in image.tags:
            annotations = {NAME_ANNOTATION: normalized_name(tag), REF_ANNOTATION: _tag_of(tag)}
            descriptors.append({**top, "annotations": annotations})
    index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": descriptors}
    yield from _member("oci-layout", OCI_LAYOUT)
    yield from _member("index.json", json.dumps(index).encode())
    for path, data in files:
        if path not in written:
            written.add(path)
            yield from _member(path, data)
    for digest, size, stream in layers:
        path = f"blobs/sha256/{digest}"
        if path not in written:
            written.add(path)
            yield from _streamed_member(path, size, stream)
    yield _END


def _top_descriptor(image: Loadable) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The descriptor index.json names the image by, and the small files it needs."""
    if image.index is not None:
        (top,) = image.index["manifests"]
        descriptor = {key: value for key, value in top.items() if key != "annotations"}
        return descriptor, sorted(image.layout_files.items())
    config_digest = _sha256(image.config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": f"sha256:{config_digest}",
                "size": len(image.config),
            },
            "layers": [
                {"mediaType": LAYER_MEDIA_TYPE, "digest": f"sha256:{digest}", "size": size}
                for digest, size in image.layers
            ],
        }
    ).encode()
    manifest_digest = _sha256(manifest)
    descriptor = {
        "mediaType": MANIFEST_MEDIA_TYPE,
        "digest": f"sha256:{manifest_digest}",
        "size": len(manifest),
    }
    files = [
        (f"blobs/sha256/{config_digest}", image.config),
        (f"blobs/sha256/{manifest_digest}", manifest),
    ]
    return descriptor, files


def normalized_name(ref: str) -> str:
    """``app:1`` as the containerd store names it: ``docker.io/library/app:1``."""
    first, slash, _ = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if slash else f"docker.io/library/{ref}"


def _tag_of(ref: str) -> str:
    name, _, tag = ref.rpartition(":")
    return tag if name and "/" not in tag else "latest"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_END = b"\0" * (tarfile.BLOCKSIZE * 2)


def _member(name: str, data: bytes) -> Iterator[bytes]:
    yield _header(name, len(data))
    yield data
    yield _padding(len(data))


def _streamed_member(name: str, size: int, data: Iterable[memoryview]) -> Iterator[Buffer]:
    yield _header(name, size)
    yield from data  # views of the pieces as read: no copy here
    yield _padding(size)


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)
