"""docker-py's exceptions as the tool's EngineError (exit code 4), in one line that
says what was being done and why it failed. Every call to the engine goes through
here, so that nothing outside engine/ sees docker-py's exceptions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker.errors
import requests
import urllib3.exceptions

from ci_integration.errors import EngineError, EngineGone, found_behind

ENGINE_GONE = "the Docker engine stopped answering (is dockerd still running?)"

# What a call to the engine can raise: docker-py's own errors, and what requests or,
# for a response streamed after its headers, urllib3 raise when the socket goes.
ENGINE_EXCEPTIONS = (
    docker.errors.DockerException,
    requests.RequestException,
    urllib3.exceptions.HTTPError,
)
# Of those, what says the engine could not be reached at all.
_LOST = (requests.ConnectionError, ConnectionError, urllib3.exceptions.ProtocolError)


@contextlib.contextmanager
def engine_errors(action: str) -> Iterator[None]:
    try:
        yield
    except ENGINE_EXCEPTIONS as exc:
        raise as_engine_error(action, exc) from None


def as_engine_error(action: str, exc: BaseException) -> EngineError:
    """``exc`` in one line; EngineGone when the engine could not be reached at all."""
    kind = EngineGone if lost_connection(exc) else EngineError
    return kind(f"{action} failed: {explain(exc)}")


def explain(exc: BaseException) -> str:
    """The engine's own explanation; for a lost connection, that the engine is gone
    (urllib3's text for it is a tuple repr that helps no one)."""
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    if lost_connection(exc):
        return ENGINE_GONE
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def lost_connection(exc: BaseException) -> bool:
    """Whether the engine could not be reached at all (no socket, refused, reset),
    here or in what docker-py wrapped."""
    return found_behind(exc, _LOST) is not None
