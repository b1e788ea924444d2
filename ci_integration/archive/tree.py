"""The listing of a saved directory: every path with its type, mode, mtime, and
where its bytes are (pieces inside packs). Stored as a zstd-compressed JSON blob.

A tree read back from a store is untrusted: ``Tree.from_bytes`` refuses anything
that could write outside the target (absolute paths, ``..``, a path below a
symlink) or create something other than a file, a folder or a symlink.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import json
import operator
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

import zstandard

from ci_integration.errors import CorruptDataError, UnsafeArchiveError
from ci_integration.store.base import DIGEST_PATTERN

FORMAT_VERSION = 1
MAX_TREE_BYTES = 512 * 1024 * 1024
DIRECTORY, FILE, SYMLINK = "d", "f", "l"
_HEX = re.compile(r"[0-9a-f]*")


@dataclasses.dataclass(slots=True)
class Record:
    root: int
    path: str  # relative to the root, "/"-separated; "" is the root itself
    type: str
    mode: int
    mtime_ns: int
    size: int = 0
    pieces: list[int] = dataclasses.field(default_factory=list)
    target: str = ""

    def to_list(self) -> list[Any]:
        tail = self.target if self.type == SYMLINK else self.pieces
        return [self.root, self.path, self.type, self.mode, self.mtime_ns, self.size, tail]

    @classmethod
    def from_list(cls, item: list[Any]) -> Record:
        root, path, kind, mode, mtime_ns, size, tail = item
        record = cls(int(root), str(path), str(kind), int(mode), int(mtime_ns), int(size))
        if kind == SYMLINK:
            record.target = str(tail)
        else:
            record.pieces = [int(piece) for piece in tail]
        return record


class Piece(NamedTuple):
    id: str  # sha256 hex of the raw bytes
    pack: int
    offset: int
    length: int


@dataclasses.dataclass
class Tree:
    roots: list[str]
    packs: list[tuple[str, int]]  # (blob digest, uncompressed size)
    pieces: list[Piece]
    records: list[Record]

    @property
    def raw_size(self) -> int:
        return sum(record.size for record in self.records)

    def to_bytes(self) -> bytes:
        with collection_paused():
            return self._to_bytes()

    def _to_bytes(self) -> bytes:
        document = {
            "version": FORMAT_VERSION,
            "roots": self.roots,
            "packs": [list(pack) for pack in self.packs],
            "pieces": [[p.id, p.pack, p.offset, p.length] for p in self.pieces],
            "records": [record.to_list() for record in self.records],
        }
        text = json.dumps(document, separators=(",", ":"))
        return zstandard.ZstdCompressor(level=3).compress(text.encode())

    @classmethod
    def from_bytes(cls, data: bytes) -> Tree:
        with collection_paused():
            return cls._from_bytes(data)

    @classmethod
    def _from_bytes(cls, data: bytes) -> Tree:
        try:
            size = zstandard.get_frame_parameters(data).content_size
            if size > MAX_TREE_BYTES:
                raise UnsafeArchiveError(f"directory listing claims {size} bytes: refused")
            document = json.loads(zstandard.ZstdDecompressor().decompress(data))
            if document["version"] != FORMAT_VERSION:
                raise CorruptDataError(f"listing format {document['version']} is not supported")
            tree = cls(
                roots=[str(root) for root in document["roots"]],
                packs=[(str(digest), int(size)) for digest, size in document["packs"]],
                pieces=[Piece(str(i), int(k), int(o), int(n)) for i, k, o, n in document["pieces"]],
                records=[Record.from_list(item) for item in document["records"]],
            )
        except CorruptDataError:
            raise
        except (zstandard.ZstdError, ValueError, KeyError, TypeError) as exc:
            raise CorruptDataError(f"directory listing is malformed: {exc!r}") from None
        tree.validate()
        return tree

    def validate(self) -> None:
        """Refuse a listing that is inconsistent or could write outside its target.

        Checked in bulk first, over whole columns (a 100,000-file listing in a
        fraction of the time a record at a time takes); only a listing that fails is
        walked record by record, to name what is wrong with it."""
        if not self._valid_in_bulk():
            self._find_fault()
            raise CorruptDataError("directory listing is inconsistent")

    def _valid_in_bulk(self) -> bool:
        pack_sizes = [size for _, size in self.packs]
        if not all(DIGEST_PATTERN.fullmatch(digest) for digest, _ in self.packs):
            return False
        if pack_sizes and min(pack_sizes) < 0:
            return False
        lengths: tuple[int, ...] = ()
        if self.pieces:
            ids, packs, offsets, lengths = zip(*self.pieces, strict=True)
            if set(map(len, ids)) != {64} or not _HEX.fullmatch("".join(ids)):
                return False
            if min(packs) < 0 or max(packs) >= len(self.packs):
                return False
            if min(offsets) < 0 or min(lengths) < 0:
                return False
            ends = map(operator.add, offsets, lengths)
            if any(map(operator.gt, ends, map(pack_sizes.__getitem__, packs))):
                return False
        records = self.records
        if not {record.root for record in records} <= set(range(len(self.roots))):
            return False
        if not {record.type for record in records} <= {DIRECTORY, FILE, SYMLINK}:
            return False
        paths = [record.path for record in records]
        if not _all_safe_relative_paths(paths):
            return False
        files = [record for record in records if record.type == FILE]
        indices = list(itertools.chain.from_iterable(record.pieces for record in files))
        if indices and (min(indices) < 0 or max(indices) >= len(self.pieces)):
            return False
        sizes = [sum(map(lengths.__getitem__, record.pieces)) for record in files]
        if sizes != [record.size for record in files]:
            return False
        targets = [record.target for record in records if record.type == SYMLINK]
        if not all(targets) or any("\0" in target for target in targets):
            return False
        kinds = {(record.root, record.path): record.type for record in records}
        if len(kinds) != len(records):
            return False
        parents = {
            kinds.get((record.root, record.path.rpartition("/")[0]))
            for record in records
            if record.path
        }
        return parents <= {DIRECTORY}

    def _find_fault(self) -> None:
        """Raise the error that names the first thing wrong with this listing."""
        for digest, size in self.packs:
            if not DIGEST_PATTERN.fullmatch(digest) or size < 0:
                raise CorruptDataError(f"listing names an invalid pack {digest[:80]!r}")
        ids = [piece.id for piece in self.pieces]
        if any(len(id_) != 64 for id_ in ids) or not _HEX.fullmatch("".join(ids)):
            raise CorruptDataError("listing has an invalid piece")
        for piece in self.pieces:
            if not 0 <= piece.pack < len(self.packs):
                raise CorruptDataError("listing has an invalid piece")
            if piece.offset < 0 or piece.length < 0:
                raise CorruptDataError("listing has a piece with a negative extent")
            if piece.offset + piece.length > self.packs[piece.pack][1]:
                raise CorruptDataError("listing has a piece beyond the end of its pack")
        kinds: list[dict[str, str]] = [{} for _ in self.roots]  # each root's paths
        for record in self.records:
            self._validate_record(record)
            if record.path in kinds[record.root]:
                raise UnsafeArchiveError(f"listing names {record.path!r} twice")
            kinds[record.root][record.path] = record.type
        for record in self.records:
            if record.path and kinds[record.root].get(record.path.rpartition("/")[0]) != DIRECTORY:
                raise UnsafeArchiveError(
                    f"{record.path!r} is not inside a folder of the archive (a symlink or nothing)"
                )

    def _validate_record(self, record: Record) -> None:
        if not 0 <= record.root < len(self.roots):
            raise CorruptDataError("listing has a record for an unknown root")
        if record.type not in (DIRECTORY, FILE, SYMLINK):
            raise UnsafeArchiveError(f"{record.path!r} is a special file (type {record.type!r})")
        if not is_safe_relative_path(record.path):
            raise UnsafeArchiveError(f"unsafe path {record.path[:200]!r} in archive")
        if record.type == FILE:
            count = len(self.pieces)
            if not all(0 <= index < count for index in record.pieces):
                raise CorruptDataError(f"{record.path!r} names a piece that does not exist")
            if sum([self.pieces[index].length for index in record.pieces]) != record.size:
                raise CorruptDataError(f"{record.path!r}: its pieces do not add up to its size")
        if record.type == SYMLINK and (not record.target or "\0" in record.target):
            raise UnsafeArchiveError(f"{record.path!r} is a symlink with an invalid target")


def is_safe_relative_path(path: str) -> bool:
    if path == "":
        return True
    if "\0" in path or path.startswith("/"):
        return False
    return _UNSAFE_PARTS.isdisjoint(path.split("/"))


_UNSAFE_PARTS = frozenset(("", ".", ".."))


def _all_safe_relative_paths(paths: list[str]) -> bool:
    """``is_safe_relative_path`` for every one of ``paths``, by substring searches over
    them all joined by NULs (which no safe path holds)."""
    joined = "\0".join(paths)
    if joined.count("\0") != max(len(paths) - 1, 0):
        return False
    # An empty part: a path that starts or ends with "/", or holds "//".
    if joined.startswith("/") or joined.endswith("/"):
        return False
    if any(part in joined for part in ("//", "\0/", "/\0")):
        return False
    # A part "." or "..": with every "/" a NUL too, such a part sits between NULs.
    parts = "\0" + joined.replace("/", "\0") + "\0"
    return "\0.\0" not in parts and "\0..\0" not in parts


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cycle collector held off while a listing of many records is built or
    read: records form no cycles, and with a hundred thousand of them every collection
    walks them all again (half the time a 100,000-file listing takes to read)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
