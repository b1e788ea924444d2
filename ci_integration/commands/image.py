"""``ci-integration image save|load``: hand images from one job to the next through
the store, with no registry. Layers are shared with everything else in the store,
and a load moves only the layers the engine lacks."""

from __future__ import annotations

import argparse
import logging

from ci_integration import report
from ci_integration.commands import options
from ci_integration.engine.images import Engine
from ci_integration.errors import CacheError, UsageError
from ci_integration.images.layers import KIND, StoredImage, load_images, save_image
from ci_integration.job import Job
from ci_integration.report import human_bytes
from ci_integration.store.scoped import Hit, ScopedStore

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    save_parser = actions.add_parser("save", help="save images (layers shared, once each)")
    load_parser = actions.add_parser("load", help="load images, moving only missing layers")
    for sub in (save_parser, load_parser):
        sub.add_argument("images", nargs="+", metavar="IMAGE")
        sub.add_argument("--key", help="entry key (KEY/IMAGE; default: image:IMAGE)")
        options.add_store_options(sub)
        options.add_output_options(sub, github=False)
    options.add_read_only(save_parser, "do nothing")
    options.add_restore_keys(load_parser)
    load_parser.add_argument(
        "--fail-on-miss", action="store_true", help="exit 3 when an image is not in the store"
    )
    save_parser.set_defaults(handler=save)
    load_parser.set_defaults(handler=load)


def entry_key(ref: str, key: str | None) -> str:
    """``image:REF`` (what ``build`` looks for when a base image is missing), or
    ``KEY/REF`` when the job names its own key."""
    return f"{key}/{ref}" if key else f"image:{ref}"


def save(args: argparse.Namespace, job: Job) -> int:
    if args.read_only:
        log.info("not saving %s: this job is read-only (--read-only)", ", ".join(args.images))
        return 0
    key = _render(args.key, job)
    store = job.store(args.store)
    if store.read_only:
        log.info("not saving %s: this job is read-only (%s)", ", ".join(args.images), store.why)
        return 0
    engine = Engine(job.env)
    results = []
    try:
        with store.store.lock(exclusive=False):
            known: list[StoredImage] = []
            for ref in args.images:
                if engine.image(ref) is None:
                    raise UsageError(f"no image {ref} on the engine: build or pull it first")
                transfer = save_image(engine, store, ref, entry_key(ref, key), known)
                if transfer.stored is not None:
                    known.append(transfer.stored)
                log.info(
                    "saved %s to %s: %d of %d layers new, %s uploaded in %.1f s",
                    ref,
                    store.write_scope,
                    transfer.moved_layers,
                    transfer.layers,
                    human_bytes(transfer.moved_bytes),
                    transfer.seconds,
                )
                results.append(
                    {
                        "image": ref,
                        "key": entry_key(ref, key),
                        "id": transfer.image_id,
                        "layers": transfer.layers,
                        "new_layers": transfer.moved_layers,
                        "uploaded_bytes": transfer.moved_bytes,
                    }
                )
    except (CacheError, OSError) as exc:
        if args.strict:
            raise CacheError(str(exc)) from exc
        log.warning("images not saved: %s", exc)
    finally:
        engine.close()
    report.emit({"images": results}, as_json=args.json, github_output=False, env=job.env)
    return 0


def load(args: argparse.Namespace, job: Job) -> int:
    key = _render(args.key, job)
    prefixes = [job.render_key(prefix) for prefix in args.restore_keys]
    store = job.store(args.store)
    engine = Engine(job.env)
    results = []
    try:
        with store.store.lock(exclusive=False):
            wanted = []
            for ref in args.images:
                stored = _find(store, ref, key, prefixes)
                if stored is None:
                    results.append({"image": ref, "hit": Hit.MISS})
                    continue
                wanted.append((stored, [ref]))
                results.append(
                    {
                        "image": ref,
                        "hit": Hit.EXACT
                        if stored.manifest.key == entry_key(ref, key)
                        else Hit.PARTIAL,
                        "key": stored.manifest.key,
                        "scope": stored.manifest.scope,
                    }
                )
            transfers = load_images(engine, store, wanted, engine.present_chain_ids())
        for result, transfer in zip(
            [r for r in results if r["hit"] is not Hit.MISS], transfers, strict=True
        ):
            result.update(
                layers=transfer.layers,
                loaded_layers=transfer.moved_layers,
                loaded_bytes=transfer.moved_bytes,
            )
            log.info(
                "loaded %s from %s: %d of %d layers moved (%s)",
                result["image"],
                result["scope"],
                transfer.moved_layers,
                transfer.layers,
                human_bytes(transfer.moved_bytes),
            )
    except (CacheError, OSError) as exc:
        if args.strict:
            raise CacheError(str(exc)) from exc
        log.warning("images not loaded: %s", exc)
    finally:
        engine.close()
    misses = [r["image"] for r in results if r["hit"] is Hit.MISS]
    if misses:
        log.info("not in the store: %s", ", ".join(misses))
    report.emit({"images": results}, as_json=args.json, github_output=False, env=job.env)
    if misses and args.fail_on_miss:
        raise CacheError(f"not in the store: {', '.join(misses)} (--fail-on-miss)")
    return 0


def _find(store: ScopedStore, ref: str, key: str | None, prefixes: list[str]) -> StoredImage | None:
    match = store.find(
        entry_key(ref, key),
        prefixes,
        kind=KIND,
        accept=lambda manifest: manifest.metadata.get("ref") == ref,
    )
    if match is None:
        return None
    store.mark_used(match.manifest)
    return StoredImage.of(match.manifest)


def _render(template: str | None, job: Job) -> str | None:
    return None if template is None else job.render_key(template)
