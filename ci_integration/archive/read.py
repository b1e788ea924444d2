"""Reading pieces back out of packs as a stream, for consumers that are not folders
(a layer fed to ``docker load``): packs fetched ahead by threads, a few kept.

Told the order in which records will be read (``expect``), the reader fetches ahead
across them, so the stream does not wait at the start of each record for its first
pack to arrive: with a remote store, that wait is a round trip a layer.
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Callable, Iterator, Sequence

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
        self._upcoming: collections.deque[int] = collections.deque()  # packs, piece by piece

    def __enter__(self) -> PieceReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def expect(self, records: Sequence[Record]) -> None:
        """The records about to be read, in the order they will be."""
        self._upcoming.extend(self.tree.pieces[i].pack for r in records for i in r.pieces)

    def read(self, record: Record) -> Iterator[memoryview]:
        if not self._upcoming:
            self.expect([record])
        for index in record.pieces:
            piece = self.tree.pieces[index]
            self._fetch_ahead()
            data = self._request(piece.pack).result()
            if self._upcoming and self._upcoming[0] == piece.pack:
                self._upcoming.popleft()
            yield memoryview(data)[piece.offset : piece.offset + piece.length]

    def _fetch_ahead(self) -> None:
        """The next packs to be read, as many as there are workers and as many again."""
        ahead: dict[int, None] = {}
        for pack in self._upcoming:
            if len(ahead) == self.workers * 2:
                break
            ahead[pack] = None
        for pack in ahead:
            self._request(pack)

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
