"""A Dockerfile in which every stage can be built on its own.

``--target`` takes a stage's name, and a stage without ``AS name`` has none. When
the build needs such a stage, a copy of the Dockerfile gives it one
(``AS ci-stage-N``); names change no instruction, so no cache key changes, and
``--from=N`` still refers to it by number.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ci_integration.errors import UsageError
from ci_integration.images.dockerfile import Dockerfile, Stage

_FROM_LINE = re.compile(r"^(\s*FROM\s+(?:--\S+\s+)*\S+)(\s*)$", re.IGNORECASE)


def generated_name(stage: Stage) -> str:
    return f"ci-stage-{stage.index}"


@contextlib.contextmanager
def stage_dockerfile(
    parsed: Dockerfile, path: Path, stages: Sequence[Stage]
) -> Iterator[tuple[Path, dict[str, str]]]:
    """Yields the Dockerfile to build with, and each stage's ``--target`` name."""
    unnamed = [stage for stage in stages if stage.name is None]
    names = {stage.ref: stage.name or generated_name(stage) for stage in stages}
    if not unnamed:
        yield path, names
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for stage in unnamed:
        index = stage.from_line - 1
        match = _FROM_LINE.match(lines[index].rstrip("\r\n"))
        if match is None:
            raise UsageError(
                f"{path}:{stage.from_line}: give this stage a name (FROM ... AS name) to cache it"
            )
        ending = lines[index][len(lines[index].rstrip("\r\n")) :]
        lines[index] = f"{match.group(1)} AS {generated_name(stage)}{ending}"
    with tempfile.TemporaryDirectory(prefix="ci-integration-dockerfile-") as scratch:
        copy = Path(scratch) / path.name
        copy.write_text("".join(lines), encoding="utf-8")
        ignore = path.with_name(path.name + ".dockerignore")
        if ignore.exists():
            # BuildKit looks for <Dockerfile>.dockerignore beside the Dockerfile it is given.
            shutil.copyfile(ignore, copy.with_name(copy.name + ".dockerignore"))
        yield copy, names
