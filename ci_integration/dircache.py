"""Folders cached in a store: save (only what changed is uploaded) and restore
(exact key, else restore-key prefixes, along the scope chain)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ci_integration.archive.extract import extract
from ci_integration.archive.pack import Packer, known_pieces, pack_fetcher
from ci_integration.archive.tree import FILE, SYMLINK, Tree
from ci_integration.archive.walk import scan
from ci_integration.errors import CorruptDataError
from ci_integration.report import Progress
from ci_integration.store.manifest import BlobRef, Manifest
from ci_integration.store.scoped import Hit, ScopedStore

log = logging.getLogger(__name__)

KIND = "directory"


@dataclasses.dataclass
class SaveResult:
    key: str
    scope: str
    saved: bool
    unchanged: bool = False
    files: int = 0
    new_bytes: int = 0
    reused_bytes: int = 0
    uploaded_bytes: int = 0
    seconds: float = 0.0
    manifest: Manifest | None = None  # the entry written, when one was
    reused_from: list[str] = dataclasses.field(default_factory=list)  # "scope/key" each
    refused_empty: bool = False  # empty folders kept from replacing an entry with files


@dataclasses.dataclass
class RestoreResult:
    hit: Hit
    key: str | None = None
    scope: str | None = None
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    manifest: Manifest | None = None  # the entry restored, on a hit
    removed_files: int = 0  # files the targets held that the cache did not, now gone


def save(
    store: ScopedStore,
    key: str,
    paths: Sequence[str],
    roots: Sequence[Path],
    reference_prefixes: Sequence[str] = (),
    references: Sequence[Manifest] = (),
    *,
    names: Sequence[str] | None = None,
    allow_empty: bool = False,
) -> SaveResult:
    """Save ``roots`` (written by the user as ``paths``) under ``key`` in the job's scope.
    ``names`` are the roots' names in the entry where ``paths`` has patterns (the
    matches, in the order of ``roots``); by default, ``paths`` themselves. Folders
    that hold no file do not replace an entry that holds some, unless ``allow_empty``.

    Pieces already stored are referenced instead of uploaded: those of the entry
    with this key, of the newest entry matching ``reference_prefixes``, of the
    entries ``references``, of every entry this job restored, and of the newest
    entry holding the same ``paths`` whatever its key.
    """
    started = time.monotonic()
    if store.read_only:
        log.info("not saving %s: this job is read-only (%s)", key, store.why or "asked")
        return SaveResult(key, store.write_scope, saved=False)
    earlier = reusable_pieces(store, _references(store, key, paths, reference_prefixes, references))
    # The total is known once the walk has found every file, while reading goes on.
    progress = Progress(f"saving {key}")
    with Packer(store, known_pieces(tree for _, tree in earlier)) as packer:
        records = scan(list(roots), packer, progress.advance, progress.set_total)
        packer.finish()
    progress.close()
    result = SaveResult(key, store.write_scope, saved=False, seconds=time.monotonic() - started)
    referenced = packer.referenced_packs()
    result.reused_from = [
        f"{manifest.scope}/{manifest.key}"
        for manifest, (_, sizes) in earlier
        if referenced & sizes.keys()
    ]
    if not records:
        log.warning("nothing to save for %s: none of %s exists", key, ", ".join(paths))
        return result
    if not allow_empty and not any(record.type in (FILE, SYMLINK) for record in records):
        current = store.read_entry(store.write_scope, key, KIND)
        if current is not None and int(current.metadata.get("files", 0)) > 0:
            log.warning(
                "not saving %s: %s hold no files, and the entry holds %s (the entry stays;"
                " --allow-empty replaces it)",
                key,
                ", ".join(paths),
                current.metadata["files"],
            )
            result.refused_empty = True
            return result
    tree = Tree(list(paths if names is None else names), packer.packs, packer.pieces, records)
    tree_blob = tree.to_bytes()
    tree_digest, tree_uploaded = store.upload(tree_blob)
    stats = packer.stats
    result.files = sum(record.type == FILE for record in records)
    result.new_bytes, result.reused_bytes = stats.new_bytes, stats.reused_bytes
    result.uploaded_bytes = stats.uploaded_bytes + (len(tree_blob) if tree_uploaded else 0)

    current = store.read_entry(store.write_scope, key, KIND)
    if current is not None and current.metadata.get("tree") == tree_digest:
        store.mark_used(current)
        result.unchanged = True
    else:
        blobs = [BlobRef(tree_digest, len(tree_blob))]
        blobs += [BlobRef(digest, packer.stored_sizes[digest]) for digest, _ in tree.packs]
        metadata = {
            "tree": tree_digest,
            "paths": list(paths),
            "files": result.files,
            "bytes": tree.raw_size,
        }
        result.manifest = Manifest(KIND, key, store.write_scope, tuple(blobs), metadata)
        store.commit(result.manifest)
        result.saved = True
    result.seconds = time.monotonic() - started
    return result


def restore(
    store: ScopedStore,
    key: str,
    restore_keys: Sequence[str],
    paths: Sequence[str],
    roots: Sequence[Path],
    *,
    lookup_only: bool = False,
    merge: bool = False,
    locate: Callable[[list[str]], list[Path]] | None = None,
) -> RestoreResult:
    """Restore the best entry into ``roots``, all or nothing; a miss changes nothing.

    Each root replaces its folder whole, or with ``merge`` is extracted over it (the
    cache's files replace theirs, the others stay). ``locate`` gives the folders for
    the entry's root names, where ``paths`` has patterns; without it the names must be
    ``paths`` and go to ``roots``. ``lookup_only`` says what would be restored, and
    downloads nothing."""
    started = time.monotonic()
    match = store.find(key, restore_keys, kind=KIND, accept=_same_paths(paths))
    if match is None:
        return RestoreResult(Hit.MISS, seconds=time.monotonic() - started)
    manifest = match.manifest
    if lookup_only:
        return RestoreResult(
            match.hit,
            key=manifest.key,
            scope=manifest.scope,
            files=int(manifest.metadata.get("files", 0)),
            bytes=int(manifest.metadata.get("bytes", 0)),
            seconds=time.monotonic() - started,
            manifest=manifest,
        )
    tree = _load_tree(store, manifest)
    if locate is not None:
        roots = locate(tree.roots)
    elif tree.roots != list(paths):
        raise CorruptDataError(f"entry {manifest.key} lists other paths than its manifest")

    progress = Progress(f"restoring {manifest.key}", total=tree.raw_size)
    try:
        removed = extract(
            tree, list(roots), pack_fetcher(store, tree), progress.advance, merge=merge
        )
    finally:
        progress.close()
    for target, count, examples in removed:
        more = ", ..." if count > len(examples) else ""
        log.warning(
            "%s: %d files that were not in the cache are gone (%s%s)%s",
            target,
            count,
            ", ".join(examples),
            more,
            "" if merge else "; --merge keeps them",
        )
    store.mark_used(manifest)
    return RestoreResult(
        match.hit,
        key=manifest.key,
        scope=manifest.scope,
        files=sum(record.type == FILE for record in tree.records),
        bytes=tree.raw_size,
        seconds=time.monotonic() - started,
        manifest=manifest,
        removed_files=sum(entry.files for entry in removed),
    )


def _same_paths(paths: Sequence[str]) -> Callable[[Manifest], bool]:
    return lambda manifest: manifest.metadata.get("paths") == list(paths)


def _references(
    store: ScopedStore,
    key: str,
    paths: Sequence[str],
    reference_prefixes: Sequence[str],
    references: Sequence[Manifest],
) -> list[Manifest]:
    """The entries whose pieces a save of ``paths`` under ``key`` may reference, each once."""
    match = store.find(key, reference_prefixes, kind=KIND, accept=_same_paths(paths))
    found = [match.manifest] if match else []
    found += [*references, *store.restored_by_job()]
    alike = store.newest_of_family(KIND, paths)
    if alike is not None:
        found.append(alike)
    unique = {(manifest.scope, manifest.key, manifest.kind): manifest for manifest in found}
    return list(unique.values())


def reusable_pieces(
    store: ScopedStore, manifests: Sequence[Manifest]
) -> list[tuple[Manifest, tuple[Tree, dict[str, int]]]]:
    """Each entry whose pieces a save may reference (a folder's or an image's: both
    name their listing ``tree``) with its listing and blob sizes; an unusable entry is
    left out, with a warning."""
    earlier = []
    for manifest in manifests:
        try:
            tree = _load_tree(store, manifest)
        except CorruptDataError as exc:
            log.warning("not reusing the pieces of %s: %s", manifest.key, exc)
            continue
        earlier.append((manifest, (tree, {b.digest: b.size for b in manifest.blobs})))
    return earlier


def _load_tree(store: ScopedStore, manifest: Manifest) -> Tree:
    digest = manifest.metadata.get("tree")
    if not isinstance(digest, str) or digest not in {blob.digest for blob in manifest.blobs}:
        raise CorruptDataError(f"entry {manifest.key} names no listing among its blobs")
    return Tree.from_bytes(store.download(digest))
