"""Run every benchmark (or those named) and print one table.

python -m bench [SECTION...]
"""

from __future__ import annotations

import compileall
import importlib
import sys
from pathlib import Path

import ci_integration
from bench.table import render

# Section name -> module with run() -> list[Row]. A section lands with its issue.
SECTIONS: dict[str, str] = {
    "cache": "bench.cache_directory",
    "build": "bench.build_cache",
    "mounts": "bench.mount_cache",
    "backends": "bench.backends",
    "run": "bench.run_signals",
}
PENDING = {
    "cache": "directory save/restore vs tar|zstd (issue 3)",
    "build": "cached multi-stage build vs docker save/load (issue 4)",
    "mounts": "ccache across jobs (issue 5)",
    "run": "SIGTERM to container gone, cleanup of 200 containers (issue 6)",
    "backends": "S3, GHA, OCI, Jenkins throughput vs local (issue 7)",
}


def main(argv: list[str]) -> int:
    chosen = argv or list(SECTIONS)
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        print(f"bench: unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}")
        return 2
    # The CLI timed starts as an installed one does, from compiled modules: an editable
    # install under PYTHONDONTWRITEBYTECODE (set on these machines) would compile its
    # every module at every start (~0.1 s).
    compileall.compile_dir(Path(ci_integration.__file__).parent, quiet=1)
    rows = []
    for name in chosen:
        module = importlib.import_module(SECTIONS[name])
        rows.extend(module.run())
    if rows:
        print(render(rows))
    for name, what in PENDING.items():
        if name not in SECTIONS:
            print(f"(not yet measured: {name}: {what})")
    return 1 if any(row.verdict == "MISSED" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
