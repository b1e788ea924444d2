"""``ci-integration run IMAGE [--] CMD...``: a command in a container that goes away
with its job: on a stop signal, at Jenkins' process-tree killer, and, should this
process be killed outright, at the janitor (``ci-integration cleanup``)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ci_integration import context
from ci_integration.commands import options
from ci_integration.containers import run as container_run
from ci_integration.containers.ccache_mount import DEFAULT_MAX_SIZE, CcacheFolder
from ci_integration.containers.killer_env import container_env
from ci_integration.containers.labels import container_labels
from ci_integration.containers.owner import Owner
from ci_integration.containers.signals import StopRequests
from ci_integration.containers.spec import ContainerSpec, unique_name, volume
from ci_integration.engine import containers as engine_api
from ci_integration.engine.images import Engine
from ci_integration.errors import UsageError
from ci_integration.job import Job

log = logging.getLogger(__name__)

# Jenkins waits about 5 s between its SIGTERM and SIGKILL; the stop must fit in it.
DEFAULT_STOP_TIMEOUT = 3


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="the image to run (pulled if missing)")
    parser.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="CMD",
        help="the command and its arguments (default: the image's)",
    )
    parser.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="set a variable; NAME alone takes it from here (repeatable)",
    )
    parser.add_argument(
        "-v",
        "--volume",
        action="append",
        default=[],
        metavar="SRC:DST[:ro]",
        help="mount a folder or volume, as docker run -v (repeatable)",
    )
    parser.add_argument(
        "--user",
        metavar="UID[:GID]",
        help="default: this process's uid:gid, so the workspace stays yours",
    )
    parser.add_argument(
        "--workspace",
        metavar="DIR",
        help="mounted at its own path (default: $WORKSPACE, $GITHUB_WORKSPACE, "
        "else the current folder)",
    )
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        help="default: the current folder when inside the workspace, else it",
    )
    parser.add_argument("--network", metavar="NAME", help="as docker run --network")
    parser.add_argument("--memory", metavar="SIZE", help="as docker run --memory (512m, 4g)")
    parser.add_argument("--cpus", type=float, metavar="N", help="as docker run --cpus")
    parser.add_argument("--shm-size", metavar="SIZE", help="as docker run --shm-size")
    parser.add_argument("--gpus", metavar="all|N|device=IDS", help="as docker run --gpus")
    parser.add_argument(
        "--stop-timeout",
        type=int,
        default=DEFAULT_STOP_TIMEOUT,
        metavar="SECONDS",
        help=f"on a stop signal, seconds to exit before SIGKILL (default: {DEFAULT_STOP_TIMEOUT})",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="never remove the container (it is still stopped with the job)",
    )
    parser.add_argument(
        "--no-init",
        dest="init",
        action="store_false",
        help="no docker-init as process 1 (for engines without it)",
    )
    parser.add_argument(
        "--ccache",
        metavar="DIR",
        help="a ccache folder kept in the store across jobs; CCACHE_DIR points at it",
    )
    parser.add_argument(
        "--ccache-key",
        default="ccache-{os}",
        metavar="KEY",
        help="the store key of --ccache (default: ccache-{os}); may use the cache placeholders",
    )
    options.add_store_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, job: Job) -> int:
    spec = container_spec(args, job, uid=os.getuid(), gid=os.getgid())
    ccache = _ccache_folder(args, job) if args.ccache else None
    if ccache is not None:
        ccache.restore()
        spec = with_ccache(spec, ccache.folder, args.env)
    # Not in a `finally`: a run that never started (no engine, no image) made nothing,
    # and its empty folder must not replace the stored entry.
    code = _run_container(args, job.env, spec)
    if ccache is not None:
        ccache.finish()
    return code


def _run_container(args: argparse.Namespace, env: Mapping[str, str], spec: ContainerSpec) -> int:
    with StopRequests() as stops:
        with stops.interruptible():
            engine = Engine(env)
        try:
            with stops.interruptible():
                _ensure_image(engine, spec.image)
                spec = dataclasses.replace(spec, userns_host=engine_api.userns_remapped(engine.api))
            log.debug(
                "running %s from %s as %s in %s", spec.name, spec.image, spec.user, spec.workdir
            )
            return container_run.run(
                engine.api,
                spec,
                stops,
                grace=args.stop_timeout,
                stdout=sys.stdout.buffer,
                stderr=sys.stderr.buffer,
            )
        finally:
            engine.close()


def with_ccache(spec: ContainerSpec, folder: Path, requested: list[str]) -> ContainerSpec:
    """The folder mounted at its own path, CCACHE_DIR pointing at it, and a size cap
    unless the job set its own."""
    ccache_env = {"CCACHE_DIR": str(folder)}
    if not any(item.partition("=")[0] == "CCACHE_MAXSIZE" for item in requested):
        ccache_env["CCACHE_MAXSIZE"] = DEFAULT_MAX_SIZE
    volumes = list(spec.volumes)
    if not folder.is_relative_to(spec.workspace):
        volumes.append(volume(f"{folder}:{folder}"))
    return dataclasses.replace(spec, env={**spec.env, **ccache_env}, volumes=volumes)


def _ccache_folder(args: argparse.Namespace, job: Job) -> CcacheFolder:
    key = job.render_key(args.ccache_key)
    folder = (job.cwd / args.ccache).resolve()
    return CcacheFolder(folder, key, job.store(args.store), strict=args.strict)


def container_spec(args: argparse.Namespace, job: Job, *, uid: int, gid: int) -> ContainerSpec:
    if args.stop_timeout < 0:
        raise UsageError("--stop-timeout must be 0 or more seconds")
    if args.cpus is not None and args.cpus <= 0:
        raise UsageError("--cpus must be more than 0")
    env, cwd, ci = job.env, job.cwd, job.ci
    workspace = Path(args.workspace or env.get("WORKSPACE") or env.get("GITHUB_WORKSPACE") or cwd)
    workspace = (cwd / workspace).resolve()
    if not workspace.is_dir():
        raise UsageError(f"the workspace {workspace} is not a folder")
    workdir = args.workdir or str(cwd if cwd.is_relative_to(workspace) else workspace)
    if args.user:
        _warn_if_unkillable(args.user, uid, ci)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return ContainerSpec(
        image=args.image,
        command=command,
        name=unique_name(ci.job_name, ci.build_id),
        user=args.user or f"{uid}:{gid}",
        workspace=str(workspace),
        workdir=workdir,
        env=container_env(_requested_env(args.env, env), env),
        labels=container_labels(
            ci, Owner.this_process(), datetime.datetime.now(datetime.timezone.utc), keep=args.keep
        ),
        volumes=[volume(text) for text in args.volume],
        network=args.network,
        memory=args.memory,
        cpus=args.cpus,
        shm_size=args.shm_size,
        gpus=args.gpus,
        init=args.init,
        keep=args.keep,
    )


def _requested_env(values: list[str], env: Mapping[str, str]) -> dict[str, str]:
    """``NAME=VALUE``, or ``NAME`` alone to pass this process's value, as docker does."""
    requested = {}
    for item in values:
        name, equals, value = item.partition("=")
        if not name:
            raise UsageError(f"bad -e {item!r}: write NAME=VALUE or NAME")
        if equals:
            requested[name] = value
        elif name in env:
            requested[name] = env[name]
    return requested


def _warn_if_unkillable(user: str, uid: int, job: context.CIContext) -> None:
    """A CI agent that is not root can read and kill only its own user's processes."""
    if uid == 0 or job.provider is context.Provider.LOCAL:
        return
    if user.partition(":")[0] != str(uid):
        log.warning(
            "--user %s: the command runs as another user than this job (uid %d), so "
            "the job's process-tree killer cannot find its processes; the container "
            "still goes when this command is stopped",
            user,
            uid,
        )


def _ensure_image(engine: Engine, image: str) -> None:
    if engine.image(image) is not None:
        return
    log.info("pulling %s", image)
    if not engine.pull(image):
        raise UsageError(f"the image {image} is not on the engine and could not be pulled")
