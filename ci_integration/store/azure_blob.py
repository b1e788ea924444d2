"""Bytes to and from an Azure Blob storage URL signed by someone else (a SAS URL, as
the GitHub cache service v2 hands out): one Put Blob for what fits in a block, else
Put Block for each block and Put Block List to commit them; a plain GET to read.

The URL's query string is the signature, a secret: it never reaches a message (the
transport names the host only).
"""

from __future__ import annotations

import base64
import xml.sax.saxutils
from urllib.parse import quote

from ci_integration.store.gha_http import Transport

# The REST version asked for: Put Blob takes up to 5000 MiB from 2019-12-12 on.
API_VERSION = "2021-08-06"
# Over this, blocks: a block retried costs at most this much again.
BLOCK_BYTES = 32 * 1024 * 1024
SERVICE_NAME = "cache storage (Azure Blob)"
REFUSED = "the signed URL was refused (expired, or not valid for this request)"


class AzureBlob:
    def __init__(self, transport: Transport, *, block_bytes: int = BLOCK_BYTES) -> None:
        self.transport = transport
        self.block_bytes = block_bytes

    def upload(self, url: str, data: bytes) -> None:
        headers = {"x-ms-version": API_VERSION}
        if len(data) <= self.block_bytes:
            self.transport.request("PUT", url, "uploading", data=data,
                                   headers={**headers, "x-ms-blob-type": "BlockBlob"})  # fmt: skip
            return
        view = memoryview(data)
        ids = []
        for number, start in enumerate(range(0, len(data), self.block_bytes)):
            # Every id of a blob must be as long as the others.
            block_id = base64.b64encode(f"block-{number:08d}".encode()).decode()
            ids.append(block_id)
            part = bytes(view[start : start + self.block_bytes])
            block_url = _with(url, f"comp=block&blockid={quote(block_id, safe='')}")
            self.transport.request("PUT", block_url, f"uploading block {number + 1}", data=part,
                                   headers=headers)  # fmt: skip
        listing = "".join(f"<Latest>{xml.sax.saxutils.escape(i)}</Latest>" for i in ids)
        body = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{listing}</BlockList>'
        self.transport.request("PUT", _with(url, "comp=blocklist"), "committing the blocks",
                               data=body.encode(),
                               headers={**headers, "Content-Type": "application/xml"})  # fmt: skip

    def download(self, url: str) -> bytes:
        # A body cut short raises in requests; what arrives is checked against its digest.
        response = self.transport.request("GET", url, "downloading",
                                          headers={"x-ms-version": API_VERSION})  # fmt: skip
        return response.content


def _with(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"
