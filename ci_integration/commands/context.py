"""``ci-integration context``: print the detected CI context."""

from __future__ import annotations

import argparse
import shlex

from ci_integration import report
from ci_integration.context import OVERRIDE_PREFIX
from ci_integration.job import Job
from ci_integration.store import default_store_url

DERIVED = frozenset({"scope_chain"})


def configure(parser: argparse.ArgumentParser) -> None:
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="print JSON")
    formats.add_argument("--shell", action="store_true", help="print export lines for eval")
    formats.add_argument(
        "--default-store",
        action="store_true",
        help="print only the store the cache commands use when given no --store",
    )
    parser.add_argument("--github-output", action="store_true", help="also write $GITHUB_OUTPUT")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, job: Job) -> int:
    if args.default_store:
        print(default_store_url(job.env))
        return 0
    values = job.ci.as_dict()
    if args.shell:
        # The names are the override variables, so an eval'd context is read back as is.
        for name, value in values.items():
            if value is not None and name not in DERIVED:
                print(
                    f"export {OVERRIDE_PREFIX}{name.upper()}={shlex.quote(report.as_text(value))}"
                )
        return 0
    report.emit(values, as_json=args.json, github_output=args.github_output, env=job.env)
    return 0
