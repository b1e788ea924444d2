"""The stream of pieces a ``docker load`` reads: every byte in order, and the packs of
the records to come fetched before the stream reaches them."""

from __future__ import annotations

import hashlib
import os
import threading
import time

from ci_integration.archive.read import PieceReader
from ci_integration.archive.tree import FILE, Piece, Record, Tree

PACK = 1000


def tree_of(layers: list[list[bytes]]) -> tuple[Tree, list[bytes]]:
    """A tree whose records each hold pieces, every piece a pack of its own."""
    packs, pieces, records = [], [], []
    for number, layer in enumerate(layers):
        record = Record(0, f"layer{number}", FILE, 0o644, 0)
        for data in layer:
            packs.append(data)
            pieces.append(Piece(hashlib.sha256(data).hexdigest(), len(packs) - 1, 0, len(data)))
            record.pieces.append(len(pieces) - 1)
            record.size += len(data)
        records.append(record)
    digests = [("sha256:" + hashlib.sha256(pack).hexdigest(), len(pack)) for pack in packs]
    return Tree(["layers"], digests, pieces, records), packs


def test_every_byte_comes_in_order_and_later_records_are_fetched_ahead():
    layers = [[os.urandom(PACK) for _ in range(count)] for count in (1, 3, 2)]
    tree, packs = tree_of(layers)
    requested: list[int] = []
    lock = threading.Lock()

    def fetch(index: int) -> bytes:
        with lock:
            requested.append(index)
        return packs[index]

    with PieceReader(tree, fetch, workers=2) as reader:
        reader.expect(tree.records)
        first = b"".join(reader.read(tree.records[0]))
        # The first record's one pack read, and the next three (two workers, two packs
        # each), of the records still to come, asked for: their fetches run meanwhile.
        deadline = time.monotonic() + 10
        while len(requested) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(requested) == [0, 1, 2, 3]
        rest = [b"".join(reader.read(record)) for record in tree.records[1:]]
    assert [first, *rest] == [b"".join(layer) for layer in layers]
    assert sorted(requested) == list(range(len(packs)))


def test_a_record_read_without_being_expected_still_comes_whole():
    layers = [[os.urandom(PACK) for _ in range(5)], [os.urandom(PACK)]]
    tree, packs = tree_of(layers)
    with PieceReader(tree, packs.__getitem__, workers=1) as reader:
        assert b"".join(reader.read(tree.records[1])) == b"".join(layers[1])
        assert b"".join(reader.read(tree.records[0])) == b"".join(layers[0])
