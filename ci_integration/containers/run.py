"""One container run to its end, signal-safe: created under a unique name, its output
streamed live, and gone however the run ends.

- The command ends: its exit code is returned; the engine removes the container
  (auto-remove), so nothing is left even if this process dies a moment later.
- A stop signal (recorded by StopRequests, never raised): staged shutdown (the
  image's stop signal, ``grace`` seconds, SIGKILL), removal, then Interrupted. More
  signals during the shutdown change nothing: it runs to its end.
- Anything fails at start-up: the container is killed and removed, the error goes on.
- ``keep``: the container is stopped when the run is cut short, never removed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import signal
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

import docker
import requests

from ci_integration.containers.signals import StopRequests
from ci_integration.containers.spec import ContainerSpec, create_arguments
from ci_integration.engine import containers as engine_api
from ci_integration.errors import EngineError, EngineGone, Interrupted

log = logging.getLogger(__name__)

# After the container is gone its output ends at once; these only bound a sick engine.
GONE_TIMEOUT = 15.0
OUTPUT_DRAIN_TIMEOUT = 5.0


def run(
    api: docker.APIClient,
    spec: ContainerSpec,
    stops: StopRequests,
    *,
    grace: int,
    stdout: BinaryIO,
    stderr: BinaryIO,
) -> int:
    """Runs ``spec`` and returns its exit code; raises Interrupted after a stop signal."""
    arguments = create_arguments(api, spec)
    stops.raise_if_stopped()
    with _started(api, spec, arguments, stops) as (output, waiting):
        watch = _Watch(output, waiting, stdout, stderr)
        gone = False
        try:
            signum = watch.exit_or_stop(stops)
            if signum is None:
                code = watch.finish()
                gone = True
                return code
            log.info(
                "%s: stopping %s (%d s to exit, then SIGKILL)",
                signal.Signals(signum).name,
                spec.name,
                grace,
            )
            shut_down(api, spec, grace)
            gone = True
            try:
                watch.finish()
            except EngineError as exc:
                log.warning("%s", exc)
            raise Interrupted(signum)
        finally:
            if not gone:
                shut_down(api, spec, grace)
            watch.close()


@contextlib.contextmanager
def _started(
    api: docker.APIClient, spec: ContainerSpec, arguments: dict[str, Any], stops: StopRequests
) -> Iterator[tuple[engine_api.OutputStream, requests.Response]]:
    """Create, attach, register the wait, start: any failure on the way (or a stop
    signal before the start) kills and removes the container before it goes on."""
    output = waiting = None
    try:
        engine_api.create(api, spec.name, arguments)
        output = engine_api.attach_output(api, spec.name)
        # Removal is what "gone" means; a kept container is only waited on to exit.
        waiting = engine_api.begin_wait(api, spec.name, "next-exit" if spec.keep else "removed")
        stops.raise_if_stopped()
        engine_api.start(api, spec.name)
    except BaseException:
        engine_api.discard(api, spec.name)
        for stream in (output, waiting):
            if stream is not None:
                stream.close()
        raise
    yield output, waiting


def shut_down(api: docker.APIClient, spec: ContainerSpec, grace: int) -> None:
    """Stop with grace, kill, remove: each stage runs even if the one before failed,
    and none raises, so the reason we are shutting down is the one reported. An
    engine that is gone is said once: the container is then the janitor's."""
    stages = [
        functools.partial(engine_api.stop, api, spec.name, grace),
        functools.partial(engine_api.kill, api, spec.name),
    ]
    if not spec.keep:
        stages.append(functools.partial(engine_api.remove, api, spec.name))
    for stage in stages:
        try:
            stage()
        except EngineGone:
            log.warning(
                "the Docker engine stopped answering: %s could not be removed;"
                " `ci-integration cleanup` removes it once the engine is back",
                spec.name,
            )
            return
        except EngineError as exc:
            log.warning("%s", exc)


class _Watch:
    """Two threads: one copies the output, one waits for the exit (or removal) and
    then makes ``done`` readable, so the main thread can select on it and on signals."""

    def __init__(
        self,
        output: engine_api.OutputStream,
        waiting: requests.Response,
        stdout: BinaryIO,
        stderr: BinaryIO,
    ) -> None:
        self._output = output
        self._waiting = waiting
        self._sinks = {0: stdout, 1: stderr}
        self._done_read, self._done_write = os.pipe2(os.O_CLOEXEC)
        self.exit_code: int | None = None
        self.failure: BaseException | None = None
        self._copier = threading.Thread(target=self._copy_output, daemon=True)
        self._waiter = threading.Thread(target=self._wait_for_exit, daemon=True)
        self._copier.start()
        self._waiter.start()

    def exit_or_stop(self, stops: StopRequests) -> int | None:
        """Blocks until the container has exited (None) or a stop signal came (its number)."""
        while True:
            ready, _, _ = select.select([stops.fileno(), self._done_read], [], [])
            signum = stops.first
            if signum is not None:
                return signum
            if self._done_read in ready:
                return None

    def finish(self) -> int:
        """The exit code, once the waiter has it and the output is copied."""
        self._waiter.join(GONE_TIMEOUT)
        if self._waiter.is_alive():
            raise EngineError(
                f"the engine did not report the container gone in {GONE_TIMEOUT:.0f} s"
            )
        self._copier.join(OUTPUT_DRAIN_TIMEOUT)
        if self.failure is not None:
            raise self.failure
        assert self.exit_code is not None
        return self.exit_code

    def close(self) -> None:
        for closable in (self._output, self._waiting):
            with contextlib.suppress(Exception):
                closable.close()
        # A waiter still running would write to the pipe; its fd number must not be reused.
        self._waiter.join(OUTPUT_DRAIN_TIMEOUT)
        if not self._waiter.is_alive():
            os.close(self._done_read)
            os.close(self._done_write)

    def _copy_output(self) -> None:
        # The waiter, not the end of the output, says when the run is over: an output
        # stream that breaks loses output, never the exit code.
        with contextlib.suppress(Exception):
            for chunks in self._output:
                for index, chunk in enumerate(chunks):
                    if chunk:
                        self._write(index, chunk)

    def _write(self, index: int, chunk: bytes) -> None:
        sink = self._sinks.get(index)
        if sink is None:
            return
        try:
            sink.write(chunk)
            sink.flush()
        except (BrokenPipeError, ValueError):
            # Nobody reads any more: keep draining, so the container is never blocked.
            self._sinks.pop(index, None)

    def _wait_for_exit(self) -> None:
        try:
            self.exit_code = engine_api.exit_code(self._waiting)
        except BaseException as exc:
            self.failure = exc
        finally:
            os.write(self._done_write, b"x")
