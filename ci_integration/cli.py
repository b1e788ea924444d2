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

    cache = commands.add_parser("cache", help="save and restore folders through a cache store")
    actions = cache.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=_Parser
    )
    save = actions.add_parser("save", help="save folders under a key, in this job's scope")
    restore = actions.add_parser("restore", help="restore folders: exact key, else a prefix")
    for sub in (save, restore):
        sub.add_argument("paths", nargs="+", metavar="PATH", help="folders or files")
        sub.add_argument(
            "--key",
            required=True,
            help="the key; may use {hash:GLOB,...}, {branch}, {scope}, {os}, {arch}",
        )
        sub.add_argument(
            "--restore-key",
            dest="restore_keys",
            action="append",
            default=[],
            metavar="PREFIX",
            help="key prefix to fall back on (repeatable)",
        )
        _add_store_options(sub)
        _add_output_options(sub)
    save.add_argument("--read-only", action="store_true", help="do not save (say so and exit 0)")
    restore.add_argument("--fail-on-miss", action="store_true", help="exit 3 when nothing matches")
    save.set_defaults(handler=cache_command.save)
    restore.set_defaults(handler=cache_command.restore)

    listing = actions.add_parser("list", help="list the entries of a store")
    listing.add_argument("--scope", help="only this scope")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _add_store_options(listing, strict=False)
    listing.set_defaults(handler=cache_command.list_entries)

    prune = actions.add_parser("prune", help="evict entries by age and size, drop unused blobs")
    prune.add_argument(
        "--max-size",
        type=cache_command.parse_size,
        metavar="SIZE",
        help="keep the store under SIZE (500M, 10G), least recently used go first",
    )
    prune.add_argument(
        "--max-age",
        type=cache_command.parse_duration,
        metavar="AGE",
        help="remove entries unused for AGE (12h, 7d)",
    )
    prune.add_argument(
        "--keep-last",
        type=_positive,
        metavar="N",
        help="keep the N newest entries of each key family in each scope",
    )
    prune.add_argument(
        "--protect",
        action="append",
        default=[],
        metavar="SCOPE",
        help="never remove this scope's entries (repeatable; default: the"
        " default branch's scope; --protect '' protects none)",
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    _add_store_options(prune, strict=False)
    _add_output_options(prune)
    prune.set_defaults(handler=cache_command.prune_store)

    build = commands.add_parser("build", help="build an image, every stage cached")
    build.add_argument("context", nargs="?", default=".", help="the build context (default: .)")
    build.add_argument("-f", "--file", metavar="DOCKERFILE", help="default: CONTEXT/Dockerfile")
    build.add_argument("-t", "--tag", required=True, metavar="IMAGE", help="the image to build")
    build.add_argument("--target", metavar="STAGE", help="the stage to build (default: the last)")
    build.add_argument(
        "--build-arg",
        dest="build_args",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a build argument (repeatable)",
    )
    build.add_argument(
        "--export",
        dest="exports",
        action="append",
        default=[],
        metavar="STAGE:/PATH=DIR",
        help="copy a path of a built stage to DIR",
    )
    build.add_argument(
        "--registry",
        metavar="HOST/REPO",
        help="cache stage images in this registry instead of the store",
    )
    build.add_argument(
        "--docker",
        metavar="PATH",
        help="the docker client to use (default: $CI_INTEGRATION_DOCKER, docker)",
    )
    build.add_argument(
        "--builder",
        default="auto",
        choices=["auto", "buildx", "buildkit", "legacy"],
        help="how to build (default: the best the client can do)",
    )
    build.add_argument(
        "--no-mount-cache",
        dest="mount_cache",
        action="store_false",
        help="do not carry RUN --mount=type=cache folders across jobs",
    )
    build.add_argument(
        "--mount-cache-exclude",
        dest="mount_exclude",
        action="append",
        default=[],
        metavar="ID",
        help="leave this cache mount out (repeatable)",
    )
    build.add_argument(
        "--mount-helper-image",
        metavar="IMAGE",
        help="image with a shell to copy cache mounts in and out"
        " (default: the base image of the stage that uses the mount)",
    )
    build.add_argument("--read-only", action="store_true", help="restore the cache, never save")
    _add_store_options(build)
    _add_output_options(build)
    build.set_defaults(handler=build_command.run)

    image = commands.add_parser("image", help="hand images to later jobs through the store")
    image_actions = image.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=_Parser
    )
    image_save = image_actions.add_parser("save", help="save images (layers shared, once each)")
    image_load = image_actions.add_parser("load", help="load images, moving only missing layers")
    for sub in (image_save, image_load):
        sub.add_argument("images", nargs="+", metavar="IMAGE")
        sub.add_argument("--key", help="entry key (KEY/IMAGE; default: image:IMAGE)")
        _add_store_options(sub)
        sub.add_argument("--json", action="store_true", help="print the result as JSON")
    image_save.add_argument("--read-only", action="store_true", help="do not save")
    image_load.add_argument(
        "--restore-key",
        dest="restore_keys",
        action="append",
        default=[],
        metavar="PREFIX",
        help="key prefix to fall back on (repeatable)",
    )
    image_load.add_argument(
        "--fail-on-miss", action="store_true", help="exit 3 when an image is not in the store"
    )
    image_save.set_defaults(handler=image_command.save)
    image_load.set_defaults(handler=image_command.load)

    run_command.configure(commands.add_parser("run", help="run a container that ends with its job"))
    cleanup_command.configure(commands.add_parser("cleanup", help="remove leaked containers"))
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _add_store_options(parser: argparse.ArgumentParser, strict: bool = True) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        help="file://DIR (default: $CI_INTEGRATION_STORE, else a local folder)",
    )
    if strict:
        parser.add_argument(
            "--strict",
            action="store_true",
            help="fail (exit 3) on cache trouble instead of warning",
        )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--github-output", action="store_true", help="also write $GITHUB_OUTPUT")


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
    except Interrupted as exc:
        log.error("%s", exc)
        return exc.exit_code
    except CIIntegrationError as exc:
        log.error("%s", exc, exc_info=args.debug)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted by SIGINT")
        return 130
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
