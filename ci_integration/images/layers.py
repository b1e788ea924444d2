"""Images in the store: an image's config and layers saved as an entry of kind
``image``, and brought back into an engine moving only the layers it lacks.

The layers of ``docker save`` are cut into pieces like any file (see archive/),
so a layer, or a 4 MiB run of one, that the store already holds is not uploaded
again: a base image shared by ten images is stored once. On load, the archive
given to the engine (in the format its image store reads: image_archive.py)
leaves out every layer the engine has; the engine takes a layer it already holds
by its chain ID and reads the file only for the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ci_integration.archive.pack import Packer, known_pieces, pack_fetcher
from ci_integration.archive.read import PieceReader
from ci_integration.archive.tree import DIRECTORY, FILE, Record, Tree
from ci_integration.dircache import reusable_pieces
from ci_integration.engine.images import Engine, ImageInfo, chain_ids
from ci_integration.errors import CacheError, CorruptDataError
from ci_integration.images.image_archive import (
    Loadable,
    docker_archive,
    oci_layout,
    read_export,
    relabelled,
)
from ci_integration.store.manifest import BlobRef, Manifest
from ci_integration.store.scoped import ScopedStore

log = logging.getLogger(__name__)

KIND = "image"


@dataclasses.dataclass
class ImageTransfer:
    ref: str
    image_id: str
    layers: int = 0
    moved_layers: int = 0
    moved_bytes: int = 0  # uploaded (save) or fed to the engine (load)
    seconds: float = 0.0
    stored: StoredImage | None = None  # the entry a save wrote


@dataclasses.dataclass(frozen=True)
class StoredImage:
    manifest: Manifest
    image_id: str
    diff_ids: tuple[str, ...]
    layers: tuple[str, ...]  # each layer's file (its sha256, hex), in diff ID order

    @classmethod
    def of(cls, manifest: Manifest) -> StoredImage:
        metadata = manifest.metadata
        try:
            image_id, diff_ids = str(metadata["image_id"]), tuple(map(str, metadata["diff_ids"]))
            # Entries of before the containerd store kept uncompressed layers only,
            # each named by its diff ID.
            layers = tuple(
                map(str, metadata.get("layers") or [d.removeprefix("sha256:") for d in diff_ids])
            )
        except (KeyError, TypeError) as exc:
            raise CorruptDataError(f"image entry {manifest.key} is malformed: {exc!r}") from None
        if len(layers) != len(diff_ids):
            raise CorruptDataError(f"image entry {manifest.key} names layers it does not have")
        return cls(manifest, image_id, diff_ids, layers)

    def layout(self, store: ScopedStore) -> dict[str, bytes]:
        """The small files of the OCI layout the engine wrote (index.json among them),
        or nothing when the engine wrote none."""
        named = self.manifest.metadata.get("layout") or {}
        listed = {blob.digest for blob in self.manifest.blobs}
        if not isinstance(named, dict) or not set(named.values()) <= listed:
            raise CorruptDataError(f"image entry {self.manifest.key} names a foreign file")
        return {str(path): store.download(digest) for path, digest in named.items()}

    def tree(self, store: ScopedStore) -> Tree:
        digest = self.manifest.metadata.get("tree")
        if digest not in {blob.digest for blob in self.manifest.blobs}:
            raise CorruptDataError(f"image entry {self.manifest.key} names no layer listing")
        return Tree.from_bytes(store.download(digest))


def save_image(
    engine: Engine,
    store: ScopedStore,
    ref: str,
    key: str,
    earlier: Sequence[StoredImage] = (),
    metadata: dict[str, Any] | None = None,
    also: Sequence[Manifest] = (),
) -> ImageTransfer:
    """Save image ``ref`` under ``key``; pieces held by ``earlier`` entries (and by the
    entries of any kind in ``also``) are not uploaded."""
    started = time.monotonic()
    info = engine.image(ref)
    if info is None:
        raise CacheError(f"cannot save {ref}: the engine has no such image")
    references = reusable_pieces(store, [*(stored.manifest for stored in earlier), *also])
    with Packer(store, known_pieces(pair for _, pair in references)) as packer:
        exported = read_export(engine.export(ref), packer)
        packer.finish()
    # The config names the layers: an export whose config names others is not this
    # image. (Its digest is the image ID on the classic store only.)
    if exported.diff_ids != list(info.diff_ids):
        raise CacheError(f"the export of {ref} does not hold the layers of its image")
    records = [Record(0, "", DIRECTORY, 0o755, 0)]
    for digest in dict.fromkeys(exported.layers):
        pieces, size = exported.packed[digest]
        records.append(Record(0, digest, FILE, 0o644, 0, size, pieces))
    tree = Tree(["layers"], packer.packs, packer.pieces, records)
    tree_blob = tree.to_bytes()
    tree_digest, tree_uploaded = store.upload(tree_blob)
    config_digest, config_uploaded = store.upload(exported.config)
    listing_bytes = len(tree_blob) * tree_uploaded + len(exported.config) * config_uploaded
    blobs = [BlobRef(config_digest, len(exported.config)), BlobRef(tree_digest, len(tree_blob))]
    layout: dict[str, str] = {}
    if exported.index is not None:
        index_blob = json.dumps(exported.index).encode()
        for path, data in [("index.json", index_blob), *sorted(exported.layout_files.items())]:
            digest, uploaded = store.upload(data)
            listing_bytes += len(data) * uploaded
            layout[path] = digest
            blobs.append(BlobRef(digest, len(data)))
    blobs += [BlobRef(digest, packer.stored_sizes[digest]) for digest, _ in tree.packs]
    manifest = Manifest(
        KIND,
        key,
        store.write_scope,
        tuple(dict.fromkeys(blobs)),
        {
            **(metadata or {}),
            "image_id": info.id,
            "diff_ids": list(info.diff_ids),
            "layers": exported.layers,
            "config": config_digest,
            "tree": tree_digest,
            "layout": layout,
            "ref": ref,
            "bytes": tree.raw_size,
        },
    )
    store.commit(manifest)
    new_layers = [r for r in records if r.type == FILE and any(map(packer.is_new, r.pieces))]
    return ImageTransfer(
        ref,
        info.id,
        layers=len(info.diff_ids),
        moved_layers=len(new_layers),
        moved_bytes=packer.stats.uploaded_bytes + listing_bytes,
        seconds=time.monotonic() - started,
        stored=StoredImage.of(manifest),
    )


def load_images(
    engine: Engine,
    store: ScopedStore,
    wanted: Sequence[tuple[StoredImage, Sequence[str]]],
    present: set[str],
    copies: Sequence[tuple[int, Mapping[str, str], str]] = (),
) -> list[ImageTransfer]:
    """Bring each stored image into the engine under its tags, in one ``docker load``
    that carries only the layers the engine lacks. ``present`` (the engine's layer
    chains) is updated with what was loaded. ``copies`` (the index of an image in
    ``wanted``, labels, a tag) come in the same load: that image with labels added."""
    started = time.monotonic()
    copied = {position for position, _, _ in copies}
    transfers = []
    images: list[Loadable] = []
    loaded: list[StoredImage] = []
    by_position: dict[int, Loadable] = {}
    sources: dict[str, tuple[Record, PieceReader]] = {}
    needed: dict[str, None] = {}
    with contextlib.ExitStack() as readers:
        for position, (stored, tags) in enumerate(wanted):
            transfer = ImageTransfer(tags[0], stored.image_id, layers=len(stored.diff_ids))
            transfers.append(transfer)
            if engine.image(stored.image_id) is not None and position not in copied:
                for tag in tags:
                    engine.tag(stored.image_id, tag)
                continue
            config = store.download(str(stored.manifest.metadata.get("config", "")))
            if json.loads(config).get("rootfs", {}).get("diff_ids") != list(stored.diff_ids):
                raise CorruptDataError(f"image entry {stored.manifest.key} has a foreign config")
            tree = stored.tree(store)
            reader = readers.enter_context(PieceReader(tree, pack_fetcher(store, tree)))
            for record in tree.records:
                if record.type == FILE:
                    sources.setdefault(record.path, (record, reader))
            lacking = _lacking_layers(stored, present)
            if any(layer not in sources for layer in stored.layers):
                raise CorruptDataError(f"image entry {stored.manifest.key} lacks a layer")
            transfer.moved_layers = len(set(lacking) - set(needed))
            transfer.moved_bytes = sum(
                sources[layer][0].size for layer in set(lacking) - set(needed)
            )
            needed.update(dict.fromkeys(lacking))
            by_position[position] = _loadable(store, stored, config, tags, tree)
            images.append(by_position[position])
            loaded.append(stored)
        images += [relabelled(by_position[at], labels, [tag]) for at, labels, tag in copies]
        if images:
            for layer in needed:  # the order the archive reads them in
                record, reader = sources[layer]
                reader.expect([record])
            files = [(layer, sources[layer][0].size, _reading(sources[layer])) for layer in needed]
            write = oci_layout if engine.image_store == "containerd" else docker_archive
            engine.load(write(images, files))
    for stored in loaded:
        present.update(chain_ids(stored.diff_ids))
    for transfer in transfers:
        transfer.seconds = time.monotonic() - started
    return transfers


def _loadable(
    store: ScopedStore, stored: StoredImage, config: bytes, tags: Sequence[str], tree: Tree
) -> Loadable:
    sizes = {record.path: record.size for record in tree.records if record.type == FILE}
    layout = stored.layout(store)
    index = json.loads(layout.pop("index.json")) if layout else None
    return Loadable(
        config, [(layer, sizes[layer]) for layer in stored.layers], list(tags), index, layout
    )


def _reading(source: tuple[Record, PieceReader]) -> Iterator[memoryview]:
    record, reader = source
    yield from reader.read(record)


def _lacking_layers(stored: StoredImage, present: set[str]) -> list[str]:
    """The layer files (sha256 hex) of the layers whose chain the engine lacks."""
    chains = chain_ids(stored.diff_ids)
    pairs = zip(stored.layers, chains, strict=True)
    return list(dict.fromkeys(layer for layer, chain in pairs if chain not in present))


def load_image(
    engine: Engine, store: ScopedStore, stored: StoredImage, tag: str, present: set[str]
) -> ImageTransfer:
    return load_images(engine, store, [(stored, [tag])], present)[0]


def find_image(
    store: ScopedStore, key: str, restore_keys: Sequence[str] = ()
) -> StoredImage | None:
    match = store.find(key, restore_keys, kind=KIND)
    if match is None:
        return None
    stored = StoredImage.of(match.manifest)
    store.mark_used(match.manifest)
    return stored


def info_matches(info: ImageInfo | None, stored: StoredImage | None) -> bool:
    """Whether the layers are the same: image ids differ between equal builds."""
    return info is not None and stored is not None and info.diff_ids == stored.diff_ids
