"""Images in the store: an image's config and layers saved as an entry of kind
``image``, and brought back into an engine moving only the layers it lacks.

The layers of ``docker save`` are cut into pieces like any file (see archive/),
so a layer, or a 4 MiB run of one, that the store already holds is not uploaded
again: a base image shared by ten images is stored once. On load, the tar given
to the engine leaves out every layer the engine has; the engine takes a layer it
already holds by its chain ID and reads the file only for the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence

from ci_integration.archive.pack import Packer, fill_from, known_pieces, pack_fetcher
from ci_integration.archive.read import PieceReader
from ci_integration.archive.tree import DIRECTORY, FILE, Record, Tree
from ci_integration.errors import CacheError, CorruptDataError
from ci_integration.images.engine import Engine, ImageInfo, chain_ids, stream_reader
from ci_integration.store.manifest import BlobRef, Manifest
from ci_integration.store.scoped import ScopedStore

log = logging.getLogger(__name__)

KIND = "image"
MAX_SMALL_MEMBER = 1024 * 1024


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

    @classmethod
    def of(cls, manifest: Manifest) -> StoredImage:
        metadata = manifest.metadata
        try:
            image_id, diff_ids = str(metadata["image_id"]), tuple(map(str, metadata["diff_ids"]))
        except (KeyError, TypeError) as exc:
            raise CorruptDataError(f"image entry {manifest.key} is malformed: {exc!r}") from None
        return cls(manifest, image_id, diff_ids)

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
    metadata: dict | None = None,
) -> ImageTransfer:
    """Save image ``ref`` under ``key``; pieces held by ``earlier`` entries are not uploaded."""
    started = time.monotonic()
    info = engine.image(ref)
    if info is None:
        raise CacheError(f"cannot save {ref}: the engine has no such image")
    references = []
    for stored in earlier:
        try:
            references.append(
                (stored.tree(store), {b.digest: b.size for b in stored.manifest.blobs})
            )
        except CorruptDataError as exc:
            log.warning("not reusing %s: %s", stored.manifest.key, exc)
    with Packer(store, known_pieces(references)) as packer:
        layers, config = _read_export(engine.export(ref), packer)
        packer.finish()
    if hashlib.sha256(config).hexdigest() != info.id.removeprefix("sha256:"):
        raise CacheError(f"the export of {ref} does not match its image id")
    missing = [d for d in info.diff_ids if d.removeprefix("sha256:") not in layers]
    if missing:
        raise CacheError(f"unsupported export format: layer {missing[0][:19]} not found in it")
    records = [Record(0, "", DIRECTORY, 0o755, 0)]
    for diff_id in dict.fromkeys(info.diff_ids):
        pieces, size = layers[diff_id.removeprefix("sha256:")]
        records.append(Record(0, diff_id.removeprefix("sha256:"), FILE, 0o644, 0, size, pieces))
    tree = Tree(["layers"], packer.packs, packer.pieces, records)
    tree_blob = tree.to_bytes()
    tree_digest, tree_uploaded = store.upload(tree_blob)
    config_digest, config_uploaded = store.upload(config)
    listing_bytes = len(tree_blob) * tree_uploaded + len(config) * config_uploaded
    blobs = [BlobRef(config_digest, len(config)), BlobRef(tree_digest, len(tree_blob))]
    blobs += [BlobRef(digest, packer.stored_sizes[digest]) for digest, _ in tree.packs]
    manifest = Manifest(
        KIND,
        key,
        store.write_scope,
        tuple(blobs),
        {
            **(metadata or {}),
            "image_id": info.id,
            "diff_ids": list(info.diff_ids),
            "config": config_digest,
            "tree": tree_digest,
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
) -> list[ImageTransfer]:
    """Bring each stored image into the engine under its tags, in one ``docker load``
    that carries only the layers the engine lacks. ``present`` (the engine's layer
    chains) is updated with what was loaded."""
    started = time.monotonic()
    transfers = []
    images: list[_Loadable] = []
    sources: dict[str, tuple[Record, PieceReader]] = {}
    needed: dict[str, None] = {}
    with contextlib.ExitStack() as readers:
        for stored, tags in wanted:
            transfer = ImageTransfer(tags[0], stored.image_id, layers=len(stored.diff_ids))
            transfers.append(transfer)
            if engine.image(stored.image_id) is not None:
                for tag in tags:
                    engine.tag(stored.image_id, tag)
                continue
            config = store.download(str(stored.manifest.metadata.get("config", "")))
            if f"sha256:{hashlib.sha256(config).hexdigest()}" != stored.image_id:
                raise CorruptDataError(f"image entry {stored.manifest.key} has a foreign config")
            tree = stored.tree(store)
            reader = readers.enter_context(PieceReader(tree, pack_fetcher(store, tree)))
            for record in tree.records:
                if record.type == FILE:
                    sources.setdefault(record.path, (record, reader))
            lacking = _lacking_layers(stored, present)
            if any(layer not in sources for layer in lacking):
                raise CorruptDataError(f"image entry {stored.manifest.key} lacks a layer")
            transfer.moved_layers = len(set(lacking) - set(needed))
            transfer.moved_bytes = sum(
                sources[layer][0].size for layer in set(lacking) - set(needed)
            )
            needed.update(dict.fromkeys(lacking))
            images.append(_Loadable(stored, config, list(tags)))
        if images:
            engine.load(_load_stream(images, [sources[layer] for layer in needed]))
    for loadable in images:
        present.update(chain_ids(loadable.stored.diff_ids))
    for transfer in transfers:
        transfer.seconds = time.monotonic() - started
    return transfers


def _lacking_layers(stored: StoredImage, present: set[str]) -> list[str]:
    chains = chain_ids(stored.diff_ids)
    pairs = zip(stored.diff_ids, chains, strict=True)
    return [diff_id.removeprefix("sha256:") for diff_id, chain in pairs if chain not in present]


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


# The export side: a docker-save tar, read as a stream.


def _read_export(
    chunks: Iterable[bytes], packer: Packer
) -> tuple[dict[str, tuple[list[int], int]], bytes]:
    """Layers of a ``docker save`` stream as pieces, by their sha256; and the config.

    The layers come before the manifest that names them, so every large member is
    packed under its own sha256 (an uncompressed layer's sha256 is its diff ID).
    """
    layers: dict[str, tuple[list[int], int]] = {}
    small: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream_reader(chunks), mode="r|") as archive:
        for member in archive:
            if not member.isfile():
                continue
            source = archive.extractfile(member)
            assert source is not None
            if member.size <= MAX_SMALL_MEMBER:
                small[member.name] = source.read()
                continue
            digest, pieces = _pack_member(source, member.size, packer)
            layers[digest] = (pieces, member.size)
    try:
        (entry,) = json.loads(small["manifest.json"])
        config = small[entry["Config"]]
        for name in entry["Layers"]:
            if name in small:  # a layer small enough to have been kept aside
                digest, pieces = _pack_member(io.BytesIO(small[name]), len(small[name]), packer)
                layers[digest] = (pieces, len(small[name]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CacheError(f"unsupported export format: {exc!r}") from None
    return layers, config


def _pack_member(source, size: int, packer: Packer) -> tuple[str, list[int]]:
    digest = hashlib.sha256()
    pieces: list[int] = []
    readinto = fill_from(source.readinto)

    def hashing_readinto(view: memoryview) -> int:
        count = readinto(view)
        digest.update(view[:count])
        return count

    left = size
    while left > 0 and (piece := packer.read_piece(hashing_readinto, min(left, 4 * 1024 * 1024))):
        pieces.append(piece[0])
        left -= piece[1]
    return digest.hexdigest(), pieces


# The load side: a docker-load tar, written as a stream.


@dataclasses.dataclass(frozen=True)
class _Loadable:
    stored: StoredImage
    config: bytes
    tags: list[str]


def _load_stream(
    images: list[_Loadable], layers: list[tuple[Record, PieceReader]]
) -> Iterator[bytes]:
    manifest = [
        {
            "Config": image.stored.image_id.removeprefix("sha256:") + ".json",
            "RepoTags": image.tags,
            "Layers": [f"{d.removeprefix('sha256:')}/layer.tar" for d in image.stored.diff_ids],
        }
        for image in images
    ]
    yield from _member("manifest.json", json.dumps(manifest).encode())
    for image, entry in zip(images, manifest, strict=True):
        yield from _member(entry["Config"], image.config)
    for record, reader in layers:
        yield _header(f"{record.path}/layer.tar", record.size)
        for view in reader.read(record):
            yield bytes(view)
        yield _padding(record.size)
    yield b"\0" * (tarfile.BLOCKSIZE * 2)


def _member(name: str, data: bytes) -> Iterator[bytes]:
    yield _header(name, len(data))
    yield data
    yield _padding(len(data))


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)
