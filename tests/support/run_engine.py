"""A private engine of one kind of the matrix, for ./dev (demo, bench): started, its
environment written as shell assignments to a file, kept until SIGTERM or SIGINT.

    python -m tests.support.run_engine KIND ENV_FILE
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path

from tests.support import engines, private_engine


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in engines.KINDS:
        print(f"usage: run_engine KIND ENV_FILE (KIND: {', '.join(engines.KINDS)})",
              file=sys.stderr)  # fmt: skip
        return 2
    kind, env_file = engines.KINDS[argv[0]], Path(argv[1])
    # A handler, not a blocked mask: dockerd and containerd inherit the mask.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    why_not = private_engine.available() or kind.missing()
    if why_not:
        print(f"run_engine: no Docker {kind.name} engine here: {why_not}", file=sys.stderr)
        return 1
    with engines.pool() as pool:
        engine = pool.get(kind)
        assignments = {**engine.env, "DOCKER": engine.docker}
        env_file.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in assignments.items()))
        while not stop.wait(1):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
