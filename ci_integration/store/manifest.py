"""An entry's manifest: which blobs it needs, what kind of thing it holds, and when."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from ci_integration.errors import CorruptDataError
from ci_integration.store.base import DIGEST_PATTERN

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class BlobRef:
    digest: str
    size: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    kind: str
    key: str
    scope: str
    blobs: tuple[BlobRef, ...]
    metadata: dict[str, Any]
    created: float = dataclasses.field(default_factory=time.time)

    @property
    def size(self) -> int:
        return sum(blob.size for blob in self.blobs)

    @property
    def family(self) -> str | None:
        """What entries holding the same paths share, whatever their keys (None for
        an entry of no paths: an image)."""
        paths = self.metadata.get("paths")
        return family_of(self.kind, paths) if isinstance(paths, list) else None

    def to_json(self) -> bytes:
        document = {
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "key": self.key,
            "scope": self.scope,
            "created": self.created,
            "blobs": [{"digest": b.digest, "size": b.size} for b in self.blobs],
            "metadata": self.metadata,
        }
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and check a manifest; anything malformed raises CorruptDataError."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise CorruptDataError(f"manifest of {len(data)} bytes is too large")
        try:
            document = json.loads(data)
            if document["version"] != FORMAT_VERSION:
                raise CorruptDataError(f"manifest format {document['version']} is not supported")
            blobs = tuple(BlobRef(str(b["digest"]), int(b["size"])) for b in document["blobs"])
            manifest = cls(
                kind=str(document["kind"]),
                key=str(document["key"]),
                scope=str(document["scope"]),
                blobs=blobs,
                metadata=dict(document["metadata"]),
                created=float(document["created"]),
            )
        except CorruptDataError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptDataError(f"manifest is malformed: {exc!r}") from None
        bad = [b.digest for b in blobs if not DIGEST_PATTERN.fullmatch(b.digest) or b.size < 0]
        if bad:
            raise CorruptDataError(f"manifest names an invalid blob {bad[0][:80]!r}")
        return manifest


def family_of(kind: str, paths: Sequence[str]) -> str:
    """A short, key-safe name for (kind, paths): the family of folder entries."""
    digest = hashlib.sha256(json.dumps([kind, list(paths)]).encode()).hexdigest()
    return f"{kind}-{digest[:16]}"
