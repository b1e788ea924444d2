"""``ci-integration cleanup``: remove the tool's containers whose build is over (owner
gone, the CI says so, or too old); never any other container. For cron or a timer."""

from __future__ import annotations

import argparse
import json
import logging

from ci_integration import report
from ci_integration.commands.cache import parse_duration
from ci_integration.containers import janitor
from ci_integration.containers.cleanup import Policy, duration
from ci_integration.engine.images import Engine
from ci_integration.errors import EngineError
from ci_integration.job import Job

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE = "1d"
DEFAULT_GRACE = "1m"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-age",
        type=parse_duration,
        default=parse_duration(DEFAULT_MAX_AGE),
        metavar="AGE",
        help=f"remove containers nothing else can judge after AGE (default: {DEFAULT_MAX_AGE})",
    )
    parser.add_argument(
        "--grace",
        type=parse_duration,
        default=parse_duration(DEFAULT_GRACE),
        metavar="AGE",
        help="leave a container whose owner is gone alone until "
        f"it is AGE old (default: {DEFAULT_GRACE})",
    )
    parser.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, job: Job) -> int:
    env = job.env
    policy = Policy(max_age=args.max_age, grace=args.grace)
    engine = Engine(env)
    statuses = janitor.BuildStatuses.from_env(env)
    try:
        outcomes = janitor.sweep(engine.api, policy, statuses, dry_run=args.dry_run)
    finally:
        statuses.close()
        engine.close()
    if args.json:
        print(
            json.dumps(
                {
                    "dry_run": args.dry_run,
                    "containers": [outcome.as_dict() for outcome in outcomes],
                },
                indent=2,
            )
        )
    else:
        _print_table(outcomes, args.dry_run)
    failed = [outcome for outcome in outcomes if outcome.error]
    if failed:
        raise EngineError(f"{len(failed)} of {len(outcomes)} containers could not be removed")
    return 0


def _print_table(outcomes: list[janitor.Outcome], dry_run: bool) -> None:
    def action(outcome: janitor.Outcome) -> str:
        if not outcome.verdict.remove:
            return "kept"
        if dry_run:
            return "would remove"
        return "removed" if outcome.removed else "failed"

    rows = [
        [
            outcome.name,
            outcome.build,
            duration(outcome.age),
            action(outcome),
            outcome.verdict.reason,
        ]
        for outcome in outcomes
    ]
    if rows:
        print(report.text_table(["container", "build", "age", "action", "why"], rows))
    removed = sum(1 for outcome in outcomes if outcome.removed)
    doomed = sum(1 for outcome in outcomes if outcome.verdict.remove)
    verb = "would remove" if dry_run else "removed"
    log.info(
        "%d ci-integration containers, %s %d", len(outcomes), verb, doomed if dry_run else removed
    )
