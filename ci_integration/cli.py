"""The command line: argument parsing, and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from ci_integration import __version__, report
from ci_integration.commands import context as context_command
from ci_integration.errors import CIIntegrationError, Interrupted

log = logging.getLogger(__name__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line that says what to fix, and the documented usage exit code.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ci-integration", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="verbose log and tracebacks")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    ctx = commands.add_parser("context", help="show the CI context (branch, PR, scope...)")
    formats = ctx.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print JSON")
    formats.add_argument("--shell", action="store_true", help="print export lines for eval")
    ctx.add_argument("--github-output", action="store_true", help="also write $GITHUB_OUTPUT")
    ctx.set_defaults(handler=context_command.run)
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    report.configure(env, verbose=args.debug)
    try:
        return args.handler(args, env)
    except Interrupted as exc:
        log.error("%s", exc)
        return exc.exit_code
    except CIIntegrationError as exc:
        log.error("%s", exc, exc_info=args.debug)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
