"""The command line: argument parsing, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ci_integration import __version__, context, report
from ci_integration.errors import CIIntegrationError, Interrupted, UsageError, found_behind
from ci_integration.job import Job
from ci_integration.store.gha.handoff import take_handed_env

log = logging.getLogger(__name__)

# Each command's module is imported only when that command runs: together they pull
# in docker-py, PyGithub and python-jenkins, half a second of start-up that a
# `cache restore` has no use for.
COMMANDS = {
    "context": "show the CI context (branch, PR, scope...)",
    "cache": "save and restore folders through a cache store",
    "build": "build an image, every stage cached",
    "image": "hand images to later jobs through the store",
    "run": "run a container that ends with its job",
    "cleanup": "remove the containers of builds that are over",
}
# The top-level options, none of which takes a value.
_GLOBAL_FLAGS = ("--debug", "--version", "--help", "-h")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line that says what to fix, and the documented usage exit code.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s subcommand gets its options (None: every one)."""
    parser = _Parser(prog="ci-integration", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose log and tracebacks")
    # Subparsers take the class of their parent: every level reports errors alike.
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        subparser = commands.add_parser(name, help=summary)
        if command in (None, name):
            importlib.import_module(f"ci_integration.commands.{name}").configure(subparser)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The subcommand named in ``argv``: its first word that is not a global flag."""
    for word in argv:
        if word not in _GLOBAL_FLAGS:
            return word
    return ""


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(_command_in(argv)).parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 0
    report.configure(env, verbose=args.debug)
    try:
        cwd = Path(os.getcwd())
    except FileNotFoundError:
        log.error("the working folder is gone (deleted under this step): cd into one that exists")
        return UsageError.exit_code
    previous = _raise_on_termination()
    try:
        # The GitHub cache's variables, when export-cache-env handed them to this step.
        env = take_handed_env(env)
        job = Job(env, cwd, functools.partial(context.detect, env, cwd))
        command: Callable[[argparse.Namespace, Job], int] = args.handler
        return command(args, job)
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


def _raise_on_termination() -> dict[signal.Signals, Any]:
    """SIGTERM and SIGHUP unwind like Ctrl-C does, so every ``finally`` runs and no
    temp file or half-written entry is left behind. Returns the handlers replaced."""

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        previous[signum] = signal.signal(signum, interrupt)
    return previous


if __name__ == "__main__":
    sys.exit(main())
