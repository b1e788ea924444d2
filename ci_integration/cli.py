"""The command line: argument parsing, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from ci_integration import __version__, report
from ci_integration.commands import build as build_command
from ci_integration.commands import cache as cache_command
from ci_integration.commands import cleanup as cleanup_command
from ci_integration.commands import context as context_command
from ci_integration.commands import image as image_command
from ci_integration.commands import run as run_command
from ci_integration.errors import CIIntegrationError, Interrupted, found_behind

log = logging.getLogger(__name__)

COMMANDS = (
    ("context", context_command, "show the CI context (branch, PR, scope...)"),
    ("cache", cache_command, "save and restore folders through a cache store"),
    ("build", build_command, "build an image, every stage cached"),
    ("image", image_command, "hand images to later jobs through the store"),
    ("run", run_command, "run a container that ends with its job"),
    ("cleanup", cleanup_command, "remove the containers of builds that are over"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line that says what to fix, and the documented usage exit code.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ci-integration", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose log and tracebacks")
    # Subparsers take the class of their parent: every level reports errors alike.
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, summary in COMMANDS:
        module.configure(commands.add_parser(name, help=summary))
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 0
    report.configure(env, verbose=args.debug)
    previous = _raise_on_termination()
    try:
        return args.handler(args, env)
    except KeyboardInterrupt:
        log.error("interrupted by SIGINT")
        return 130
    except Exception as exc:
        # A signal wrapped by a library that catches every Exception (docker-py's
        # version check) still exits as a signalled job does.
        failure = found_behind(exc, Interrupted) or exc
        if isinstance(failure, Interrupted):
            log.error("%s", failure)
            return failure.exit_code
        if not isinstance(failure, CIIntegrationError):
            raise  # a bug: its traceback is the report
        log.error("%s", failure, exc_info=args.debug)
        return failure.exit_code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_on_termination() -> dict[int, object]:
    """SIGTERM and SIGHUP unwind like Ctrl-C does, so every ``finally`` runs and no
    temp file or half-written entry is left behind. Returns the handlers replaced."""

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.signal(signum, interrupt)
    return previous


if __name__ == "__main__":
    sys.exit(main())
