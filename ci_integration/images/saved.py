"""What became of a stage's or a cache mount's cache at the end of a build."""

from __future__ import annotations

from ci_integration.status import Status


class Saved(Status):
    UPLOADED = "uploaded"  # new layers or files went to the store
    UNCHANGED = "unchanged"  # the entry already held these very bytes
    RECORDED = "recorded"  # an entry of this job's scope naming blobs already stored
    IN_TARGET = "in target"  # the target came whole: the stage's cache is the target's
    EMPTY = "empty"  # a cache mount that held no file: the stored entry stays
    READ_ONLY = "read-only"  # the job may not write
    FAILED = "failed"  # the build failed before the stage was saved
    NOT_SAVED = "not saved"

    @classmethod
    def most_done(cls, first: Saved, second: Saved) -> Saved:
        """What two saves of one stage come to: the one that did most."""
        rank = [cls.NOT_SAVED, cls.UNCHANGED, cls.RECORDED, cls.UPLOADED]
        return max(first, second, key=lambda saved: rank.index(saved) if saved in rank else -1)
