"""Bytes to and from an Azure Blob storage URL signed by someone else (a SAS URL, as
the GitHub cache service v2 hands out): one Put Blob for what fits in a block, else
Put Block for each block and Put Block List to commit them; a plain GET to read.

The URL's query string is the signature, a secret: it never reaches a message (the
transport names the host only).
"""

from __future__ import annotations

import base64
import functools
import xml.sax.saxutils
from urllib.parse import quote

from ci_integration.store.gha.service import Payload
from ci_integration.store.http import Transport, parallel, range_of, ranged

# The REST version asked for: Put Blob takes up to 5000 MiB from 2019-12-12 on.
API_VERSION = "2021-08-06"
# Over this, blocks: a block retried costs at most this much again.
BLOCK_BYTES = 32 * 1024 * 1024
# Blocks in flight at once (each held in memory while it is sent).
UPLOAD_WORKERS = 4
SERVICE_NAME = "cache storage (Azure Blob)"
REFUSED = "the signed URL was refused (expired, or not valid for this request)"


class AzureBlob:
    def __init__(self, transport: Transport, *, block_bytes: int = BLOCK_BYTES) -> None:
        self.transport = transport
        self.block_bytes = block_bytes

    def upload(self, url: str, payload: Payload) -> None:
        headers = {"x-ms-version": API_VERSION}
        if payload.size <= self.block_bytes:
            self.transport.request(
                "PUT",
                url,
                "uploading",
                data=payload.read(0, payload.size),
                headers={**headers, "x-ms-blob-type": "BlockBlob"},
            )
            return
        # Every id of a blob must be as long as the others.
        starts = range(0, payload.size, self.block_bytes)
        ids = [base64.b64encode(f"block-{n:08d}".encode()).decode() for n in range(len(starts))]

        def put_block(number: int) -> None:
            start = starts[number]
            part = payload.read(start, min(self.block_bytes, payload.size - start))
            block_url = _with(url, f"comp=block&blockid={quote(ids[number], safe='')}")
            self.transport.request(
                "PUT", block_url, f"uploading block {number + 1}", data=part, headers=headers
            )

        parallel([functools.partial(put_block, n) for n in range(len(starts))], UPLOAD_WORKERS)
        listing = "".join(f"<Latest>{xml.sax.saxutils.escape(i)}</Latest>" for i in ids)
        body = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{listing}</BlockList>'
        self.transport.request(
            "PUT",
            _with(url, "comp=blocklist"),
            "committing the blocks",
            data=body.encode(),
            headers={**headers, "Content-Type": "application/xml"},
        )

    def download(self, url: str, start: int = 0, length: int | None = None) -> bytes:
        # A body cut short raises in requests; what arrives is checked against its digest.
        headers = {"x-ms-version": API_VERSION, **ranged(start, length)}
        response = self.transport.request("GET", url, "downloading", headers=headers)
        return range_of(response, start, length, self.transport.name)


def _with(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"
