"""What a container is asked to be (``ContainerSpec``), and the Engine API's create
arguments for it. The command layer fills the spec; nothing here reads the caller's
environment or process."""

from __future__ import annotations

import dataclasses
import re
import secrets
from typing import Any

import docker
import docker.errors
import docker.types

from ci_integration.errors import UsageError

_UNSAFE_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_.-]+")
_GPU_DEVICES = re.compile(r"^device=([\w.:,-]+)$")


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    image: str
    command: list[str]
    name: str
    user: str
    workspace: str
    workdir: str
    env: dict[str, str]
    labels: dict[str, str]
    volumes: list[str] = dataclasses.field(default_factory=list)
    network: str | None = None
    memory: str | None = None
    cpus: float | None = None
    shm_size: str | None = None
    gpus: str | None = None
    init: bool = True
    keep: bool = False
    userns_host: bool = False


def unique_name(*hints: str | None) -> str:
    """``ci-integration-JOB-BUILD-1a2b3c4d``: readable in ``docker ps``, never reused."""
    words = [_UNSAFE_NAME_CHARS.sub("-", hint).strip("-.") for hint in hints if hint]
    stem = "-".join(word for word in words if word)[:60].strip("-.")
    return "-".join(part for part in ("ci-integration", stem, secrets.token_hex(4)) if part)


def create_arguments(api: docker.APIClient, spec: ContainerSpec) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.create_container``; bad values are UsageErrors."""
    try:
        host_config = api.create_host_config(
            binds=[f"{spec.workspace}:{spec.workspace}:rw", *map(volume, spec.volumes)],
            network_mode=spec.network,
            mem_limit=spec.memory,
            nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
            shm_size=spec.shm_size,
            device_requests=device_requests(spec.gpus) if spec.gpus else None,
            init=spec.init or None,
            # Exited means gone: even when this process is killed before it can remove it.
            auto_remove=not spec.keep,
            # Container uids must be host uids, or the agent cannot read (nor kill) them.
            userns_mode="host" if spec.userns_host else None,
        )
    except docker.errors.DockerException as exc:
        raise UsageError(f"bad container option: {exc}") from None
    return {
        "image": spec.image,
        "command": spec.command,
        "user": spec.user,
        "working_dir": spec.workdir,
        "environment": [f"{name}={value}" for name, value in spec.env.items()],
        "labels": spec.labels,
        "host_config": host_config,
        "stdin_open": False,
        "tty": False,
    }


def volume(text: str) -> str:
    """``SOURCE:TARGET[:OPTIONS]`` as ``docker run -v`` takes it."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]) or not parts[1].startswith("/"):
        raise UsageError(f"bad -v {text!r}: write SOURCE:/TARGET[:ro]")
    return text


def device_requests(gpus: str) -> list[docker.types.DeviceRequest]:
    """``--gpus all``, ``--gpus 2`` or ``--gpus device=0,1``, as ``docker run`` reads them."""
    capabilities = [["gpu"]]
    if gpus == "all":
        return [docker.types.DeviceRequest(count=-1, capabilities=capabilities)]
    if gpus.isdigit():
        return [docker.types.DeviceRequest(count=int(gpus), capabilities=capabilities)]
    match = _GPU_DEVICES.match(gpus)
    if match:
        ids = [device for device in match.group(1).split(",") if device]
        return [docker.types.DeviceRequest(device_ids=ids, capabilities=capabilities)]
    raise UsageError(f"bad --gpus {gpus!r}: write all, a count, or device=ID[,ID...]")
