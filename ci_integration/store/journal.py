"""What this job restored, remembered across its steps, so that a later save can
reference those entries' pieces whatever its own key is.

On GitHub a key is usually spelled by the workflow (``deps-${{ hashFiles(...) }}``):
the entry a job restored and the one it saves share no prefix, and a save that only
looked for its own key's prefix would upload everything again. So every restore
(``cache restore``, ``build``, ``run --ccache``, ``image load``) appends one line
to a file that lives as long as the job: under ``$RUNNER_TEMP`` on GitHub (emptied
between jobs), ``$WORKSPACE@tmp`` on Jenkins (the build's own temp folder), else a
temp folder of this user. The lines are hints: an entry gone since is skipped, and
a piece is only referenced once its pack is known to be stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

STATE_DIR_ENV = "CI_INTEGRATION_STATE_DIR"
FILE_NAME = "restored.jsonl"
# A save reads the listings of this many of the job's latest restores, at most.
MAX_REMEMBERED = 8
# Lines longer than this are not ours: skipped, never parsed.
MAX_LINE_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class Restored:
    scope: str
    key: str
    kind: str


def state_dir(env: Mapping[str, str]) -> Path:
    """The folder of this job's state: $CI_INTEGRATION_STATE_DIR, else the CI's own
    temp folder of the job, else one of this user's."""
    if env.get(STATE_DIR_ENV):
        return Path(env[STATE_DIR_ENV])
    if env.get("RUNNER_TEMP"):
        return Path(env["RUNNER_TEMP"]) / "ci-integration"
    if env.get("WORKSPACE") and env.get("JENKINS_URL"):
        return Path(env["WORKSPACE"] + "@tmp") / "ci-integration"
    return Path(tempfile.gettempdir()) / f"ci-integration-{os.getuid()}"


class Journal:
    """The restores of one store (named by its description) in this job."""

    def __init__(self, folder: Path, store_description: str) -> None:
        self.path = folder / FILE_NAME
        self.store_id = hashlib.sha256(store_description.encode()).hexdigest()[:16]

    def record(self, scope: str, key: str, kind: str) -> None:
        """Append one line; trouble writing it costs only a later save's dedup."""
        line = json.dumps({"store": self.store_id, "scope": scope, "key": key, "kind": kind})
        data = (line + "\n").encode()
        if len(data) > MAX_LINE_BYTES:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One write of a short line with O_APPEND: parallel steps never interleave.
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, data)
            finally:
                os.close(descriptor)
        except OSError as exc:
            log.debug("could not note the restore of %s in %s: %s", key, self.path, exc)

    def restored(self) -> list[Restored]:
        """This store's entries the job restored, the latest first, each once."""
        try:
            lines = self.path.read_bytes().splitlines()
        except OSError:
            return []
        found: dict[Restored, None] = {}
        for line in reversed(lines):
            if len(line) > MAX_LINE_BYTES:
                continue
            try:
                document = json.loads(line)
                if document["store"] != self.store_id:
                    continue
                entry = Restored(
                    str(document["scope"]), str(document["key"]), str(document["kind"])
                )
            except (ValueError, KeyError, TypeError):
                continue
            found.setdefault(entry)
            if len(found) >= MAX_REMEMBERED:
                break
        return list(found)
