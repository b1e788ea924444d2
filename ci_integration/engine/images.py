"""Images on the Docker engine, through its API (docker-py): layers, tags, load and save.

Every engine failure becomes EngineError (exit code 4) with one line that says
what went wrong (engine/errors.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import docker
import docker.errors

from ci_integration.engine.errors import ENGINE_EXCEPTIONS, engine_errors, explain, lost_connection
from ci_integration.engine.facts import FactsProbe
from ci_integration.engine.facts import image_store as image_store_of
from ci_integration.errors import EngineError, EngineGone

API_TIMEOUT = 600
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    id: str
    diff_ids: tuple[str, ...]
    repo_tags: tuple[str, ...]

    @property
    def chain_ids(self) -> list[str]:
        return chain_ids(self.diff_ids)


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The engine names a layer by its chain: the layer and every layer below it."""
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
        else:
            digest = hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest()
            chain.append(f"sha256:{digest}")
    return chain


class Engine:
    def __init__(self, env: Mapping[str, str]) -> None:
        try:
            self.client = docker.DockerClient(
                **docker.utils.kwargs_from_env(environment=dict(env)), timeout=API_TIMEOUT
            )
            self.client.ping()
        except ENGINE_EXCEPTIONS as exc:
            host = env.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            if lost_connection(exc):
                raise EngineGone(
                    f"no Docker engine answers at {host}: start dockerd, or set DOCKER_HOST "
                    "to where one listens"
                ) from None
            raise EngineError(f"the Docker engine at {host} failed: {explain(exc)}") from None
        self.api = self.client.api
        self._image_store: str | None = None

    def close(self) -> None:
        self.client.close()

    @property
    def image_store(self) -> str:
        """``classic`` or ``containerd``: what ``docker save`` writes and ``load`` reads."""
        if self._image_store is None:
            with engine_errors("asking the engine for its image store"):
                self._image_store = image_store_of(self.api.info())
        return self._image_store

    def probe(self, client: str, env: Mapping[str, str]) -> FactsProbe:
        """What this engine and the docker client ``client`` say of themselves, the
        client's part still being asked (FactsProbe.result)."""
        with engine_errors("asking the engine what it is"):
            probe = FactsProbe(self.api, client, env)
        self._image_store = probe.image_store
        return probe

    def image(self, ref: str) -> ImageInfo | None:
        """The image named ``ref`` (a tag or an id), or None when the engine lacks it."""
        with engine_errors(f"inspecting {ref}"):
            try:
                data = self.api.inspect_image(ref)
            except docker.errors.ImageNotFound:
                return None
        return ImageInfo(
            data["Id"],
            tuple(data.get("RootFS", {}).get("Layers") or ()),
            tuple(data.get("RepoTags") or ()),
        )

    def present_chain_ids(self) -> set[str]:
        """Every layer chain the engine holds, whatever image it belongs to."""
        present: set[str] = set()
        with engine_errors("listing images"):
            for summary in self.api.images(all=True):
                info = self.image(summary["Id"])
                if info is not None:
                    present.update(info.chain_ids)
        return present

    def tag(self, image_id: str, ref: str) -> None:
        repository, tag = split_reference(ref)
        with engine_errors(f"tagging {ref}"):
            self.api.tag(image_id, repository, tag, force=True)

    def untag(self, ref: str) -> None:
        with engine_errors(f"removing {ref}"), contextlib.suppress(docker.errors.ImageNotFound):
            self.api.remove_image(ref, noprune=True)

    def export(self, ref: str) -> Iterator[bytes]:
        """``docker save`` of one image, as a stream of tar bytes."""
        with engine_errors(f"exporting {ref}"):
            yield from self.api.get_image(ref, chunk_size=4 * 1024 * 1024)

    def pull(self, ref: str) -> bool:
        """Pull ``ref``; False when the registry has no such image (or cannot be reached)."""
        repository, tag = split_reference(ref)
        try:
            error = _pull_push_errors(self.api.pull(repository, tag=tag, stream=True, decode=True))
        except ENGINE_EXCEPTIONS as exc:
            error = explain(exc)
        if error:
            log.debug("pull of %s: %s", ref, error)
            return False
        return True

    def push(self, ref: str) -> None:
        repository, tag = split_reference(ref)
        with engine_errors(f"pushing {ref}"):
            error = _pull_push_errors(self.api.push(repository, tag=tag, stream=True, decode=True))
        if error:
            raise EngineError(f"pushing {ref} failed: {error}")

    def load(self, tar_stream: Iterable[bytes | memoryview]) -> None:
        """``docker load`` of a tar stream; layers the engine holds may be left out of it."""
        with engine_errors("loading an image"):
            # quiet: no progress messages, as the docker client asks when not on a terminal
            for message in self.api.load_image(tar_stream, quiet=True):
                if "error" in message:
                    raise EngineError(f"the engine refused the image: {message['error']}")


class _ChunkStream(io.RawIOBase):
    """A file over an iterator of byte chunks, so tarfile can read it as a stream."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    # io.BufferedReader, the one caller, passes a memoryview; RawIOBase says any buffer.
    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._left:
            try:
                self._left = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._left))
        buffer[:count] = self._left[:count]
        self._left = self._left[count:]
        return count


def stream_reader(chunks: Iterable[bytes]) -> io.BufferedReader:
    """A readable file over the chunks of an Engine API response."""
    return io.BufferedReader(_ChunkStream(chunks), buffer_size=4 * 1024 * 1024)


def _pull_push_errors(messages: Iterable[dict[str, Any]]) -> str | None:
    for message in messages:
        if "error" in message:
            return str(message["error"])
    return None


def split_reference(ref: str) -> tuple[str, str]:
    """``host:5000/app:1`` -> (``host:5000/app``, ``1``); no tag means ``latest``."""
    name, _, digest = ref.partition("@")
    if digest:
        return name, ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, "latest"
