"""``ci-integration cache save|restore|list|prune``: folders cached in a store.

Cache trouble (an unreachable store, a full disk, corrupt data) is a warning and
the job goes on uncached; with --strict it is an error (exit code 3).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import re
from collections.abc import Iterator, Mapping

from ci_integration import dircache, keys, report
from ci_integration.cache_paths import CachePaths, is_pattern
from ci_integration.commands import options
from ci_integration.errors import CacheError
from ci_integration.job import Job
from ci_integration.report import human_bytes
from ci_integration.store.base import KeptAsBuildArtifacts
from ci_integration.store.prune import prune
from ci_integration.store.scoped import Hit

log = logging.getLogger(__name__)

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    save_parser = actions.add_parser("save", help="save folders under a key, in this job's scope")
    restore_parser = actions.add_parser("restore", help="restore folders: exact key, else a prefix")
    for sub in (save_parser, restore_parser):
        sub.add_argument("paths", nargs="+", metavar="PATH", help="folders or files")
        sub.add_argument("--key", required=True, help=options.KEY_HELP)
        options.add_restore_keys(sub)
        options.add_store_options(sub)
        options.add_output_options(sub)
    options.add_read_only(save_parser, "say so and exit 0")
    save_parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="let folders that hold no file replace an entry that holds some",
    )
    restore_parser.add_argument(
        "--fail-on-cache-miss",
        "--fail-on-miss",
        dest="fail_on_miss",
        action="store_true",
        help="exit 3 when nothing matches",
    )
    restore_parser.add_argument(
        "--merge",
        action="store_true",
        help="extract over what is in the folders (as actions/cache does) instead of"
        " replacing them whole",
    )
    restore_parser.add_argument(
        "--lookup-only",
        action="store_true",
        help="say what would be restored, and download nothing",
    )
    save_parser.set_defaults(handler=save)
    restore_parser.set_defaults(handler=restore)

    listing = actions.add_parser("list", help="list the entries of a store")
    listing.add_argument("--scope", help="only this scope")
    listing.add_argument("--json", action="store_true", help="print JSON")
    options.add_store_options(listing, strict=False)
    listing.set_defaults(handler=list_entries)

    pruning = actions.add_parser("prune", help="evict entries by age and size, drop unused blobs")
    pruning.add_argument(
        "--max-size",
        type=parse_size,
        metavar="SIZE",
        help="keep the store under SIZE (500M, 10G), least recently used first",
    )
    pruning.add_argument(
        "--max-age",
        type=parse_duration,
        metavar="AGE",
        help="remove entries unused for AGE (12h, 7d)",
    )
    pruning.add_argument(
        "--keep-last",
        type=options.positive_int,
        metavar="N",
        help="keep the N newest entries of each key family in each scope",
    )
    pruning.add_argument(
        "--protect",
        action="append",
        default=[],
        metavar="SCOPE",
        help="never remove this scope's entries (repeatable; default: the"
        " default branch's scope; --protect '' protects none)",
    )
    pruning.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    options.add_store_options(pruning, strict=False)
    options.add_output_options(pruning)
    pruning.set_defaults(handler=prune_store)


def save(args: argparse.Namespace, job: Job) -> int:
    if job.ci.read_only or args.read_only:
        reason = "--read-only" if args.read_only else "a pull request from a fork"
        log.info("not saving %s: this job is read-only (%s)", args.key, reason)
        _emit({"saved": False, "key": args.key, "reason": "read-only"}, args, job.env)
        return 0
    key, restore_keys = _render_keys(args, job)
    references = [*restore_keys, keys.literal_prefix(args.key)]
    result = dircache.SaveResult(key, job.ci.scope, saved=False)
    paths = CachePaths.of(args.paths, job.env, job.cwd)
    names = paths.expand()
    archive: dict[str, str] = {}
    with _cache_trouble(args.strict, f"not saved {key}"):
        store = job.store(args.store)
        if isinstance(store.store, KeptAsBuildArtifacts):
            archive = store.store.artifacts()
        with store.store.lock(exclusive=False):
            result = dircache.save(
                store,
                key,
                args.paths,
                [paths.resolve(name) for name in names],
                [p for p in references if p],
                names=names,
                allow_empty=args.allow_empty,
            )
        _log_save(result)
    _emit(
        {
            "saved": result.saved or result.unchanged,
            "unchanged": result.unchanged,
            "key": key,
            "scope": result.scope,
            "files": result.files,
            "new_bytes": result.new_bytes,
            "reused_bytes": result.reused_bytes,
            "reused_from": result.reused_from,
            "uploaded_bytes": result.uploaded_bytes,
            "seconds": round(result.seconds, 3),
            **({"reason": "empty"} if result.refused_empty else {}),
            # What the Jenkins step archives for the next builds to read.
            **({"archive": archive} if archive and (result.saved or result.unchanged) else {}),
        },
        args,
        job.env,
    )
    return 0


def restore(args: argparse.Namespace, job: Job) -> int:
    key, restore_keys = _render_keys(args, job)
    result = dircache.RestoreResult(Hit.MISS)
    paths = CachePaths.of(args.paths, job.env, job.cwd)
    literal = [name for name in args.paths if not is_pattern(name)]
    paths.check_disjoint(literal)  # before the store is opened: a usage error is first
    if not args.merge:
        paths.refuse_replacing_cwd(literal)
    with _cache_trouble(args.strict, f"restored nothing for {key}"):
        store = job.store(args.store)
        with store.store.lock(exclusive=False):
            result = dircache.restore(
                store,
                key,
                restore_keys,
                args.paths,
                [],
                locate=paths.locate,
                lookup_only=args.lookup_only,
                merge=args.merge,
            )
    if result.hit is Hit.MISS:
        log.info("cache miss for %s in %s", key, " > ".join(job.ci.scope_chain))
    elif args.lookup_only:
        log.info(
            "found %s in %s (%s hit): %d files, %s; not restored (--lookup-only)",
            result.key,
            result.scope,
            result.hit,
            result.files,
            human_bytes(result.bytes),
        )
    else:
        log.info(
            "restored %s from %s (%s hit): %d files, %s in %.1f s",
            result.key,
            result.scope,
            result.hit,
            result.files,
            human_bytes(result.bytes),
            result.seconds,
        )
    _emit(
        {
            # As actions/cache says it: true only for the exact key; the kind beside it.
            "cache_hit": result.hit is Hit.EXACT,
            "cache_hit_kind": result.hit,
            "primary_key": key,
            "matched_key": result.key or "",
            "matched_scope": result.scope or "",
            "files": result.files,
            "bytes": result.bytes,
            "removed_files": result.removed_files,
            "seconds": round(result.seconds, 3),
        },
        args,
        job.env,
    )
    if args.fail_on_miss and result.hit is Hit.MISS:
        raise CacheError(f"no cache entry for {key} (--fail-on-miss)")
    return 0


def list_entries(args: argparse.Namespace, job: Job) -> int:
    with _store_errors():
        entries = job.backend(args.store).list_entries(args.scope)
    entries.sort(key=lambda e: (e.scope, e.key))
    if args.json:
        rows = [
            {
                "scope": e.scope,
                "key": e.key,
                "created": _iso(e.created),
                "last_used": _iso(e.last_used),
            }
            for e in entries
        ]
        print(json.dumps(rows, indent=2))
        return 0
    for entry in entries:
        print(f"{entry.scope}\t{entry.key}\t{_iso(entry.created)}\t{_iso(entry.last_used)}")
    return 0


def prune_store(args: argparse.Namespace, job: Job) -> int:
    if args.max_size is None and args.max_age is None and args.keep_last is None:
        log.info("no --max-size, --max-age or --keep-last: removing only unreferenced blobs")
    protected = set(args.protect)
    # By default the default branch's entries are kept: every job falls back to them.
    if not args.protect and job.ci.default_branch:
        protected.add(job.ci.scope_chain[-1])
    if protected:
        log.info("protected scopes: %s", ", ".join(sorted(protected)))
    with _store_errors():
        result = prune(
            job.backend(args.store),
            max_size=args.max_size,
            max_age=args.max_age,
            keep_last=args.keep_last,
            protected=frozenset(protected - {""}),
            dry_run=args.dry_run,
        )
    verb = "would remove" if args.dry_run else "removed"
    log.info(
        "%s %d entries and %d blobs (%s); kept %d entries (%s)",
        verb,
        len(result.removed_entries),
        result.removed_blobs,
        human_bytes(result.freed_bytes),
        result.kept_entries,
        human_bytes(result.kept_bytes),
    )
    _emit(
        {
            "dry_run": args.dry_run,
            "removed_entries": [f"{e.scope}/{e.key}" for e in result.removed_entries],
            "removed_blobs": result.removed_blobs,
            "freed_bytes": result.freed_bytes,
            "kept_entries": result.kept_entries,
            "kept_bytes": result.kept_bytes,
        },
        args,
        job.env,
    )
    return 0


def parse_size(text: str) -> int:
    match = _SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write 500M, 10G or 1048576")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write 30m, 12h or 7d")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]


def _render_keys(args: argparse.Namespace, job: Job) -> tuple[str, list[str]]:
    return job.render_key(args.key), [job.render_key(prefix) for prefix in args.restore_keys]


@contextlib.contextmanager
def _cache_trouble(strict: bool, consequence: str) -> Iterator[None]:
    """Cache trouble warns and the job goes on, unless --strict."""
    try:
        yield
    except (CacheError, OSError) as exc:
        message = _describe(exc)
        if strict:
            raise CacheError(message) from exc
        log.warning("%s: %s", consequence, message)


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise CacheError(_describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc)


def _log_save(result: dircache.SaveResult) -> None:
    if result.unchanged:
        log.info("cache entry %s in %s is unchanged: nothing uploaded", result.key, result.scope)
    elif result.saved:
        source = f" (from {', '.join(result.reused_from)})" if result.reused_from else ""
        log.info(
            "saved %s to %s: %d files, %s new, %s reused%s, %s uploaded in %.1f s",
            result.key,
            result.scope,
            result.files,
            human_bytes(result.new_bytes),
            human_bytes(result.reused_bytes),
            source,
            human_bytes(result.uploaded_bytes),
            result.seconds,
        )


def _emit(values: dict[str, object], args: argparse.Namespace, env: Mapping[str, str]) -> None:
    report.emit(values, as_json=args.json, github_output=args.github_output, env=env)


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
