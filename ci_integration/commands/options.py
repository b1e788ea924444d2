"""Options that several subcommands share, declared once."""

from __future__ import annotations

import argparse

KEY_HELP = "the key; may use {hash:GLOB,...}, {branch}, {scope}, {os}, {arch}"


def add_store_options(parser: argparse.ArgumentParser, *, strict: bool = True) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        help="file://DIR or s3://BUCKET/PREFIX (default: $CI_INTEGRATION_STORE, else a"
        " local folder)",
    )
    if strict:
        parser.add_argument(
            "--strict",
            action="store_true",
            help="fail (exit 3) on cache trouble instead of warning",
        )


def add_output_options(parser: argparse.ArgumentParser, *, github: bool = True) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    if github:
        parser.add_argument(
            "--github-output", action="store_true", help="also write $GITHUB_OUTPUT"
        )


def add_restore_keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--restore-key",
        dest="restore_keys",
        action="append",
        default=[],
        metavar="PREFIX",
        help="key prefix to fall back on, newest entry first (repeatable)",
    )


def add_read_only(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--read-only", action="store_true", help=f"{what}, never save")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value
