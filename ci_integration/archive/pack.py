"""Pieces of files packed into compressed blobs, each piece stored once.

A piece is a whole small file or a slice of a large one, named by the sha256 of
its bytes. New pieces are gathered into packs of about PACK_TARGET bytes, each
compressed as one zstd frame in a worker thread and uploaded unless the store
has it. Pieces that an earlier entry already stored are referenced in place:
only what changed is uploaded.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Mapping

import zstandard

from ci_integration.archive.tree import Piece, Tree
from ci_integration.errors import CorruptDataError
from ci_integration.store.scoped import ScopedStore

PIECE_SIZE = 4 * 1024 * 1024
PACK_TARGET = 16 * 1024 * 1024
# A pack of an earlier entry whose pieces are mostly gone is not reused: its
# live pieces are packed anew, so restores do not download dead bytes.
MIN_REUSED_PACK_USE = 0.5


@dataclasses.dataclass
class PackStats:
    new_bytes: int = 0
    reused_bytes: int = 0
    uploaded_bytes: int = 0
    uploaded_blobs: int = 0


@dataclasses.dataclass(frozen=True)
class KnownPiece:
    pack_digest: str
    pack_size: int
    stored_size: int
    offset: int
    length: int


def known_pieces(earlier: Iterable[tuple[Tree, Mapping[str, int]]]) -> dict[str, KnownPiece]:
    """Pieces of earlier entries worth referencing: those in well-used packs.

    ``earlier`` gives each earlier tree with the stored size of its blobs.
    """
    known: dict[str, KnownPiece] = {}
    for tree, stored_sizes in earlier:
        used = [0] * len(tree.packs)
        for record in tree.records:
            for index in record.pieces:
                used[tree.pieces[index].pack] += tree.pieces[index].length
        for piece in tree.pieces:
            digest, size = tree.packs[piece.pack]
            if digest in stored_sizes and size and used[piece.pack] / size >= MIN_REUSED_PACK_USE:
                known.setdefault(
                    piece.id,
                    KnownPiece(digest, size, stored_sizes[digest], piece.offset, piece.length),
                )
    return known


class Packer:
    """Use as a context manager: leaving it stops the workers, also on error.

    File bytes are read straight into the open pack's buffer and named (their sha256)
    there, while they are still in the processor's cache; a full pack goes to a worker
    whole: the worker leaves out the pieces already stored (by an earlier entry, or by
    this save in another pack), compresses the rest and uploads them, and the buffer
    comes back for reuse. A save allocates a handful of buffers, not one object per
    piece.

    A piece's index is known when it is read; where its bytes live, once ``finish``
    has returned.
    """

    def __init__(self, store: ScopedStore, known: dict[str, KnownPiece], workers: int = 0):
        self.store = store
        self.known = known
        self.stats = PackStats()
        self.pieces: list[Piece] = []
        self.packs: list[tuple[str, int]] = []
        self.stored_sizes: dict[str, int] = {}
        self._pack_index: dict[str, int] = {}  # earlier packs referenced: digest -> position
        self._alive: dict[str, bool] = {}
        # Pieces this save stores: id -> (pack position, offset); None while its pack
        # is being compressed. Workers claim ids under the lock, so each is stored once.
        self._stored: dict[str, tuple[int, int] | None] = {}
        self._reused: set[str] = set()  # ids of earlier entries' pieces referenced
        # (piece index, id, length) of pieces stored elsewhere, placed at finish.
        self._found_elsewhere: list[tuple[int, str, int]] = []
        self._lock = threading.Lock()
        workers = workers or os.cpu_count() or 1
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "ci-integration-pack")
        # Packs handed to workers and not yet done; each holds one buffer.
        self._slots = threading.BoundedSemaphore(workers * 2)
        self._free_buffers: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._pending: list[concurrent.futures.Future[None]] = []
        self._local = threading.local()
        self._buffer = bytearray(PACK_TARGET)
        self._view = memoryview(self._buffer)
        self._used = 0
        # (piece index, id, offset, length) of the pieces in the buffer.
        self._open: list[tuple[int, str, int, int]] = []

    def __enter__(self) -> Packer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def read_piece(
        self, readinto: Callable[[memoryview], int], length: int
    ) -> tuple[int, int] | None:
        """Read up to ``length`` (at most PIECE_SIZE) bytes as one piece, by calling
        ``readinto`` (a file's or a stream's) with the buffer to fill.

        Returns (piece index, bytes read), or None at the end of the file. The
        piece is stored, or referenced where this save or an earlier entry already
        holds the same bytes.
        """
        if self._used and self._used + length > PACK_TARGET:
            self._flush()
        start = self._used
        count = readinto(self._view[start : start + length])
        if not count:
            return None
        index = len(self.pieces)
        self.pieces.append(_UNPLACED)
        piece_id = hashlib.sha256(self._view[start : start + count]).hexdigest()
        self._open.append((index, piece_id, start, count))
        self._used += count
        return index, count

    def referenced_packs(self) -> set[str]:
        """The packs of earlier entries this save references."""
        return set(self._pack_index)

    def is_new(self, piece_index: int) -> bool:
        """Whether this save stored the piece, rather than finding it stored."""
        return self.packs[self.pieces[piece_index].pack][0] not in self._pack_index

    def finish(self) -> None:
        """Upload what is left, wait for every pack, and place every piece; raises
        what a worker raised."""
        if self._open:
            self._flush()
        for future in self._pending:
            future.result()
        for index, piece_id, length in self._found_elsewhere:
            place = self._stored.get(piece_id)
            if place is not None:
                self.pieces[index] = Piece(piece_id, *place, length)
            else:
                self.pieces[index] = self._reference(piece_id, self.known[piece_id])

    def _flush(self) -> None:
        self._slots.acquire()
        future = self._pool.submit(self._pack_and_upload, self._buffer, self._used, self._open)
        future.add_done_callback(lambda _: self._slots.release())
        self._pending.append(future)
        try:
            self._buffer = self._free_buffers.get_nowait()
        except queue.Empty:
            self._buffer = bytearray(PACK_TARGET)
        self._view = memoryview(self._buffer)
        self._used, self._open = 0, []

    def _pack_and_upload(
        self, buffer: bytearray, size: int, pieces: list[tuple[int, str, int, int]]
    ) -> None:
        try:
            view = memoryview(buffer)
            kept = self._claim_new(pieces)
            if not kept:
                return
            if len(kept) == len(pieces):  # the whole buffer, as it is
                blob = self._compress([view[:size]])
            else:
                blob = self._compress([view[offset : offset + n] for *_, offset, n in kept])
        finally:
            self._free_buffers.put(buffer)
        digest, uploaded = self.store.upload(blob)
        with self._lock:
            position = len(self.packs)
            self.packs.append((digest, sum(length for *_, length in kept)))
            self.stored_sizes[digest] = len(blob)
            offset = 0
            for index, piece_id, _, length in kept:
                self._stored[piece_id] = (position, offset)
                self.pieces[index] = Piece(piece_id, position, offset, length)
                offset += length
            if uploaded:
                self.stats.uploaded_blobs += 1
                self.stats.uploaded_bytes += len(blob)

    def _claim_new(self, named: list[tuple[int, str, int, int]]) -> list[tuple[int, str, int, int]]:
        """The pieces this pack stores: those no earlier entry holds and that no other
        pack of this save claimed first. The others are placed at ``finish``."""
        kept = []
        for item in named:
            index, piece_id, _, length = item
            known = self.known.get(piece_id)
            reused = known is not None and self._still_stored(known.pack_digest)
            with self._lock:
                if not reused and piece_id not in self._stored:
                    self._stored[piece_id] = None
                    self.stats.new_bytes += length
                    kept.append(item)
                    continue
                if reused and piece_id not in self._reused:
                    self._reused.add(piece_id)
                    self.stats.reused_bytes += length
                self._found_elsewhere.append((index, piece_id, length))
        return kept

    def _compress(self, parts: list[memoryview]) -> bytes:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            level = self.store.store.compression_level
            compressor = self._local.compressor = zstandard.ZstdCompressor(level)
        # One frame that records its content size, so a reader can bound it.
        if len(parts) == 1:
            return compressor.compress(parts[0])
        stream = compressor.compressobj(size=sum(len(part) for part in parts))
        return b"".join([*map(stream.compress, parts), stream.flush()])

    def _still_stored(self, pack_digest: str) -> bool:
        """Whether an earlier entry's pack is still there (asked once a pack), which
        also renews its age against a prune. A lost pack's pieces are stored anew,
        so a save repairs an entry that lost a blob."""
        alive = self._alive.get(pack_digest)
        if alive is None:
            alive = self._alive[pack_digest] = self.store.store.has_blob(pack_digest)
        return alive

    def _reference(self, piece_id: str, known: KnownPiece) -> Piece:
        pack = self._pack_index.get(known.pack_digest)
        if pack is None:
            pack = self._pack_index[known.pack_digest] = len(self.packs)
            self.packs.append((known.pack_digest, known.pack_size))
            self.stored_sizes[known.pack_digest] = known.stored_size
        return Piece(piece_id, pack, known.offset, known.length)


# A piece read whose place is not known yet (its pack is with a worker).
_UNPLACED = Piece("", -1, -1, 0)


def pack_fetcher(store: ScopedStore, tree: Tree) -> Callable[[int], bytes]:
    """A function giving pack N of ``tree`` decompressed, every byte verified."""

    def fetch(index: int) -> bytes:
        digest, raw_size = tree.packs[index]
        return decompress_pack(store.download(digest), raw_size, digest)

    return fetch


def decompress_pack(blob: bytes, raw_size: int, digest: str) -> bytes:
    """A pack's bytes, refusing one that would inflate beyond its declared size."""
    try:
        declared = zstandard.get_frame_parameters(blob).content_size
        if declared != raw_size:
            raise CorruptDataError(f"pack {digest[:19]} holds {declared} bytes, not {raw_size}")
        return zstandard.ZstdDecompressor().decompress(blob, max_output_size=raw_size)
    except zstandard.ZstdError as exc:
        raise CorruptDataError(f"pack {digest[:19]} does not decompress: {exc}") from None


def fill_from(read: Callable[[memoryview], int]) -> Callable[[memoryview], int]:
    """A readinto that fills the whole view unless the stream ends: a stream may
    return less, and pieces must fall on the same boundaries every time to dedupe."""

    def readinto(view: memoryview) -> int:
        total = 0
        while total < len(view):
            count = read(view[total:])
            if not count:
                break
            total += count
        return total

    return readinto
