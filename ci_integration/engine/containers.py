"""The container calls of the Engine API (docker-py): each failure becomes one of the
tool's errors with one line saying what went wrong, and "already gone" is no failure
for the calls that make a container go."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Protocol

import docker
import docker.errors
import requests

from ci_integration.engine.errors import (
    ENGINE_EXCEPTIONS,
    as_engine_error,
    engine_errors,
    explain,
)
from ci_integration.errors import ContainerStartError, EngineError

log = logging.getLogger(__name__)

_NOT_FOUND_MARKERS = ("executable file not found", "no such file or directory")


def create(api: docker.APIClient, name: str, arguments: dict[str, Any]) -> str:
    with engine_errors(f"creating container {name}"):
        container_id: str = api.create_container(name=name, **arguments)["Id"]
        return container_id


class OutputStream(Protocol):
    """A container's (stdout, stderr) chunks, and a way to stop reading them."""

    def __iter__(self) -> Iterator[tuple[bytes | None, bytes | None]]: ...

    def close(self) -> None: ...


def attach_output(api: docker.APIClient, name: str) -> OutputStream:
    """The container's (stdout, stderr) chunks as they come; attached before the start,
    so no output is lost however fast the command is."""
    with engine_errors(f"attaching to {name}"):
        stream: OutputStream = api.attach(name, stdout=True, stderr=True, stream=True, demux=True)
        return stream


def begin_wait(api: docker.APIClient, name: str, condition: str) -> requests.Response:
    """Registers a wait now and returns the pending answer; ``exit_code`` reads it.

    docker-py's ``wait`` reads the whole answer at once, so it cannot be registered
    before the start; the engine sends the headers as soon as the wait is registered,
    which a streamed request returns on. ``removed`` also outlives an auto-removal.
    """
    with engine_errors(f"waiting for {name}"):
        url = api._url("/containers/{0}/wait", name)
        response: requests.Response = api._post(
            url, params={"condition": condition}, stream=True, timeout=None
        )
        api._raise_for_status(response)
        return response


def exit_code(response: requests.Response) -> int:
    """Blocks until the container has exited (and, if so asked, been removed)."""
    with engine_errors("waiting for the container"):
        answer = response.json()
    try:
        error = (answer.get("Error") or {}).get("Message")
        code = int(answer["StatusCode"])
    except (AttributeError, KeyError, TypeError, ValueError):
        raise EngineError(f"the engine's answer to a wait was not understood: {answer!r}") from None
    if error:
        log.debug("the engine's wait reported: %s", error)
    return code


def start(api: docker.APIClient, name: str) -> None:
    try:
        api.start(name)
    except docker.errors.APIError as exc:
        reason = explain(exc)
        lowered = reason.lower()
        if "exec" in lowered and any(marker in lowered for marker in _NOT_FOUND_MARKERS):
            raise ContainerStartError(
                f"command not found in the container: {reason}", not_found=True
            ) from None
        if "permission denied" in lowered:
            raise ContainerStartError(
                f"the command cannot be run: {reason}", not_found=False
            ) from None
        raise EngineError(f"starting {name} failed: {reason}") from None
    except ENGINE_EXCEPTIONS as exc:
        raise as_engine_error(f"starting {name}", exc) from None


def stop(api: docker.APIClient, name: str, grace: int) -> None:
    """The image's stop signal (SIGTERM unless it says otherwise), ``grace`` seconds to
    exit, then SIGKILL: the engine does all three."""
    with engine_errors(f"stopping {name}"), _gone_is_fine():
        api.stop(name, timeout=grace)


def kill(api: docker.APIClient, name: str) -> None:
    with engine_errors(f"killing {name}"), _gone_is_fine():
        api.kill(name)


def remove(api: docker.APIClient, name: str) -> None:
    with engine_errors(f"removing {name}"), _gone_is_fine():
        api.remove_container(name, force=True, v=True)


def discard(api: docker.APIClient, name: str) -> None:
    """Kill and remove, for when something already went wrong: never raises, so the
    error that brought us here is the one reported."""
    for action in (kill, remove):
        try:
            action(api, name)
        except EngineError as exc:
            log.warning("%s", exc)


def list_ours(api: docker.APIClient, label_filter: str) -> list[dict[str, Any]]:
    """Every container, running or not, that carries ``label_filter`` (``NAME=VALUE``)."""
    with engine_errors("listing containers"):
        found: list[dict[str, Any]] = api.containers(all=True, filters={"label": label_filter})
        return found


def userns_remapped(api: docker.APIClient) -> bool:
    """True when the daemon maps container uids to other host uids (--userns-remap)."""
    with engine_errors("asking the engine for its settings"):
        options = api.info().get("SecurityOptions") or []
    return any("name=userns" in option for option in options)


@contextlib.contextmanager
def _gone_is_fine() -> Iterator[None]:
    try:
        yield
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        # 409: not running (kill), removal already in progress (auto-remove).
        if exc.status_code != 409:
            raise
