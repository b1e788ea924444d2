"""The three ways to run a build, behind one interface, and the pick among them.

- ``buildx``: ``docker buildx build`` where the plugin is installed.
- ``buildkit``: the classic CLI with ``DOCKER_BUILDKIT=1`` (clients before 23.0
  have BuildKit built in; later ones need buildx for it).
- ``legacy``: the engine's own builder through the Engine API (docker-py).
Every stage image carries cache metadata: BuildKit's inline cache, or the legacy
builder's layer history, so a loaded image serves as ``--cache-from``.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import docker.errors

from ci_integration import process
from ci_integration.engine.errors import ENGINE_EXCEPTIONS, as_engine_error
from ci_integration.engine.facts import EngineFacts
from ci_integration.engine.images import Engine
from ci_integration.errors import UsageError

BUILDERS = ("buildx", "buildkit", "legacy")
_BUILDKIT_STEP = re.compile(r"^#(\d+) \[([^\]]+?) (\d+)/(\d+)\] (.*)$")
_BUILDKIT_STATUS = re.compile(r"^#(\d+) (CACHED|DONE (\d+(?:\.\d+)?)s|ERROR.*)$")
_LEGACY_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    context: Path
    dockerfile: Path
    target: str
    tags: tuple[str, ...]
    build_args: Mapping[str, str]
    cache_from: tuple[str, ...]  # image references, or BuildKit cache sources (type=...)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cache_to: str | None = None  # a BuildKit cache export (type=local,dest=...,mode=max)


@dataclasses.dataclass
class Step:
    stage: str
    instruction: str
    cached: bool = False
    seconds: float = 0.0


@dataclasses.dataclass
class BuildOutcome:
    image_id: str | None
    steps: list[Step]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.image_id is not None


class Builder(Protocol):
    name: str

    def build(self, request: BuildRequest, on_line: Callable[[str], None]) -> BuildOutcome: ...


class CliBuilder:
    """``docker build`` with BuildKit, or ``docker buildx build``; parses --progress=plain."""

    def __init__(self, docker: str, env: Mapping[str, str], *, buildx: bool) -> None:
        self.docker = docker
        self.env = env
        self.buildx = buildx
        self.name = "buildx" if buildx else "buildkit"

    def command(self, request: BuildRequest, iidfile: Path) -> list[str]:
        argv = [self.docker, "buildx", "build", "--load"] if self.buildx else [self.docker, "build"]
        argv += ["--progress=plain", "--iidfile", str(iidfile), "--target", request.target]
        argv += ["-f", str(request.dockerfile)]
        # The stage image carries its own cache metadata, so it can be a cache source.
        argv += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
        for name, value in request.build_args.items():
            argv += ["--build-arg", f"{name}={value}"]
        for ref in request.cache_from:
            argv += ["--cache-from", ref]
        if request.cache_to:
            argv += ["--cache-to", request.cache_to]
        for name, value in request.labels.items():
            argv += ["--label", f"{name}={value}"]
        for tag in request.tags:
            argv += ["-t", tag]
        return [*argv, str(request.context)]

    def build(self, request: BuildRequest, on_line: Callable[[str], None]) -> BuildOutcome:
        parser = _BuildKitProgress()
        tail: list[str] = []

        def line(text: str) -> None:
            on_line(text)
            parser.feed(text)
            tail[:] = [*tail[-19:], text]

        with tempfile.TemporaryDirectory(prefix="ci-integration-") as scratch:
            iidfile = Path(scratch) / "iid"
            env = {**self.env, "DOCKER_BUILDKIT": "1"}
            code = process.stream(self.command(request, iidfile), line, env=env)
            image_id = iidfile.read_text().strip() if iidfile.exists() else None
        if code != 0:
            return BuildOutcome(None, parser.steps, _last_error(tail) or f"exit code {code}")
        return BuildOutcome(image_id, parser.steps)


class LegacyBuilder:
    """The engine's classic builder, through the Engine API."""

    name = "legacy"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def build(self, request: BuildRequest, on_line: Callable[[str], None]) -> BuildOutcome:
        steps: list[Step] = []
        stage, started, image_id, error = "0", time.monotonic(), None, None
        stage_count = 0
        try:
            stream = self.engine.api.build(
                path=str(request.context),
                dockerfile=str(request.dockerfile),
                target=request.target,
                tag=request.tags[0] if request.tags else None,
                buildargs=dict(request.build_args),
                cache_from=list(request.cache_from),
                labels=dict(request.labels) or None,
                rm=True,
                decode=True,
            )
            for message in stream:
                if "error" in message:
                    error = str(message["error"]).strip()
                    on_line(error)
                if "aux" in message and "ID" in message["aux"]:
                    image_id = message["aux"]["ID"]
                for text in str(message.get("stream", "")).splitlines():
                    on_line(text)
                    match = _LEGACY_STEP.match(text)
                    if match:
                        if steps:
                            steps[-1].seconds = time.monotonic() - started
                        started = time.monotonic()
                        instruction = match.group(3)
                        if instruction.upper().startswith("FROM "):
                            words = instruction.split()
                            stage = words[3] if len(words) >= 4 else str(stage_count)
                            stage_count += 1
                            continue
                        steps.append(Step(stage, instruction))
                    elif text.strip() == "---> Using cache" and steps:
                        steps[-1].cached = True
        except docker.errors.APIError as exc:
            error = str(exc.explanation or exc)
        except ENGINE_EXCEPTIONS as exc:
            # The stream breaks off when the engine goes away mid-build.
            raise as_engine_error(f"building {request.target}", exc) from None
        if steps:
            steps[-1].seconds = time.monotonic() - started
        # The engine applies each --label as one more step of its own: not the user's.
        for _ in request.labels:
            if steps and steps[-1].instruction.startswith("LABEL "):
                steps.pop()
        for tag in request.tags[1:]:
            if image_id and not error:
                self.engine.tag(image_id, tag)
        return BuildOutcome(None if error else image_id, steps, error)


class _BuildKitProgress:
    """Steps out of BuildKit's plain progress: ``#7 [builder 2/4] RUN make``,
    then ``#7 CACHED`` or ``#7 DONE 3.1s``."""

    def __init__(self) -> None:
        self.by_vertex: dict[str, Step] = {}
        self.steps: list[Step] = []

    def feed(self, line: str) -> None:
        step = _BUILDKIT_STEP.match(line)
        if step:
            vertex, stage, instruction = step.group(1), step.group(2), step.group(5)
            if vertex not in self.by_vertex and not instruction.startswith("FROM "):
                self.by_vertex[vertex] = Step(stage, instruction)
                self.steps.append(self.by_vertex[vertex])
            return
        status = _BUILDKIT_STATUS.match(line)
        if status and status.group(1) in self.by_vertex:
            found = self.by_vertex[status.group(1)]
            if status.group(2) == "CACHED":
                found.cached = True
            elif status.group(3):
                found.seconds = float(status.group(3))


def _last_error(lines: list[str]) -> str | None:
    for text in reversed(lines):
        if "ERROR" in text or "error" in text.lower():
            return text.split("ERROR:", 1)[-1].strip() or text
    return None


def pick_builder(
    choice: str, facts: EngineFacts, env: Mapping[str, str], engine: Engine
) -> Builder:
    """The builder asked for, or with ``auto`` the best the client can run."""
    if choice == "legacy":
        return LegacyBuilder(engine)
    if choice not in ("auto", "buildx", "buildkit"):
        raise UsageError(f"unknown builder {choice!r}: use auto, {', '.join(BUILDERS)}")
    docker_cli = facts.client
    has_buildx = facts.buildx_version is not None
    if choice == "buildx" or (choice == "auto" and has_buildx):
        if not has_buildx:
            raise UsageError(
                f"{docker_cli} has no buildx plugin: pick --builder buildkit or legacy"
            )
        return CliBuilder(docker_cli, env, buildx=True)
    if facts.has_builtin_buildkit:
        return CliBuilder(docker_cli, env, buildx=False)
    if choice == "buildkit":
        raise UsageError(
            f"{docker_cli} (version {facts.client_major}) runs BuildKit only through buildx,"
            " which is missing: install docker-buildx or pick --builder legacy"
        )
    return LegacyBuilder(engine)
