"""Reading pieces back out of packs as a stream, for consumers that are not folders
(a layer fed to ``docker load``): packs fetched ahead by threads, a few kept."""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Callable, Iterator

from ci_integration.archive.tree import Record, Tree


class PieceReader:
    """Use as a context manager; ``read(record)`` yields the record's bytes in order."""

    def __init__(self, tree: Tree, fetch_pack: Callable[[int], bytes], workers: int = 4):
        self.tree = tree
        self.fetch_pack = fetch_pack
        self.workers = workers
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "ci-integration-read")
        self._packs: collections.OrderedDict[int, concurrent.futures.Future[bytes]] = (
            collections.OrderedDict()
        )

    def __enter__(self) -> PieceReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def read(self, record: Record) -> Iterator[memoryview]:
        packs = [self.tree.pieces[index].pack for index in record.pieces]
        for position, index in enumerate(record.pieces):
            for ahead in packs[position : position + self.workers * 2]:
                self._request(ahead)
            piece = self.tree.pieces[index]
            data = self._request(piece.pack).result()
            yield memoryview(data)[piece.offset : piece.offset + piece.length]

    def _request(self, pack: int) -> concurrent.futures.Future[bytes]:
        future = self._packs.get(pack)
        if future is None:
            future = self._packs[pack] = self._pool.submit(self.fetch_pack, pack)
            # Keep the packs in flight and a couple already read; drop the oldest.
            while len(self._packs) > self.workers * 2 + 2:
                self._packs.popitem(last=False)
        else:
            self._packs.move_to_end(pack)
        return future
