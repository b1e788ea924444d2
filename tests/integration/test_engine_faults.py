"""The Docker engine going away under a running job, on an engine of the test's own
(tests/support/private_engine.py): stopped by an operator (SIGTERM) or crashed
(SIGKILL) in the middle of a build or of a run. The job ends with one error line and
exit code 4, no traceback; the store keeps only whole entries; once the engine is
back, ``cleanup`` leaves no container of the tool behind."""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_integration.containers import labels as names
from ci_integration.store.local import LocalStore
from ci_integration.store.manifest import Manifest
from tests.support import base_images, private_engine
from tests.support.cli_process import CLI

# The module's private engine starts once, on one worker.
pytestmark = [pytest.mark.engine, pytest.mark.xdist_group("engine-faults")]

# The marker is printed by the slow step and appears in no build log line before it
# (the step's own text shows $((20+22)), not its value).
SLOW_MARKER = "slow-step-42"
DOCKERFILE = """\
FROM {base} AS first
RUN echo one >/one.txt
FROM first AS slow
RUN echo slow-step-$((20+22)) && sleep 30
"""
STOPS = {"stopped": signal.SIGTERM, "crashed": signal.SIGKILL}


@pytest.fixture(scope="module")
def faulty_engine() -> Iterator[private_engine.PrivateEngine]:
    why_not = private_engine.available()
    if why_not:
        pytest.skip(why_not)
    # A short root: unix socket paths are limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="ci-int-engine-"))
    with private_engine.running(root, live_restore=True) as started:
        yield started


@pytest.fixture
def engine_up(faulty_engine) -> private_engine.PrivateEngine:
    """The module's engine, answering (a test before may have stopped it)."""
    if not faulty_engine.answers():
        faulty_engine.start()
    return faulty_engine


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ci-int-faults-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def job_env(base_env, engine, workdir: Path) -> dict[str, str]:
    return {
        **base_env,
        "DOCKER_HOST": engine.docker_host,
        "PYTHONDONTWRITEBYTECODE": "1",
        "CI_INTEGRATION_PROVIDER": "local",
        "CI_INTEGRATION_BRANCH": "main",
        "CI_INTEGRATION_DEFAULT_BRANCH": "main",
        "CI_INTEGRATION_CACHE_DIR": str(workdir / "store"),
    }


def engine_goes_away(cli: CLI, engine, signum: int, *, once_printed: str) -> int:
    """Stops the engine with ``signum`` once the CLI has printed ``once_printed``; the
    CLI's exit code. The CLI is killed if it outlives the test."""
    try:
        cli.wait_for(once_printed, timeout=120)
        engine.stop(signum)
        return cli.finish(timeout=120)
    finally:
        cli.kill()


def assert_one_error_line(cli: CLI, *expected: str) -> None:
    errors = [line for line in cli.stderr if line.startswith("ci-integration: error:")]
    assert len(errors) == 1 and cli.stderr[-1] == errors[0], cli.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    assert not any("Traceback" in line for line in cli.stderr), cli.stderr


def ours(engine) -> list[dict]:
    with contextlib.closing(engine.client()) as client:
        return client.api.containers(all=True, filters={"label": f"{names.TOOL}={names.TOOL_NAME}"})


@pytest.mark.parametrize("stop", STOPS, ids=list(STOPS))
@pytest.mark.parametrize("builder", ["buildkit", "legacy"])
def test_a_build_whose_engine_goes_away_ends_in_one_line_and_exit_4(
    engine_up, base_env, workdir, builder, stop
):
    with contextlib.closing(engine_up.client()) as client:
        base = base_images.busybox_image(client)
    project = workdir / "project"
    project.mkdir()
    (project / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    env = job_env(base_env, engine_up, workdir)
    cli = CLI(["build", str(project), "-t", "ci-integration-test/faults:1", "--builder", builder,
               "--docker", "/usr/bin/docker"], env, workdir)  # fmt: skip
    code = engine_goes_away(cli, engine_up, STOPS[stop], once_printed=SLOW_MARKER)
    assert code == 4, cli.stderr
    assert_one_error_line(cli, "the Docker engine stopped answering")
    # Nothing half-written: every entry the store has names only blobs it has.
    store = LocalStore(workdir / "store")
    for entry in store.list_entries():
        manifest = Manifest.from_json(store.get_entry(entry.scope, entry.key) or b"")
        assert all(store.has_blob(blob.digest) for blob in manifest.blobs), entry


@pytest.mark.parametrize("stop", STOPS, ids=list(STOPS))
def test_a_run_whose_engine_goes_away_leaves_nothing_after_cleanup(
    engine_up, base_env, workdir, stop
):
    with contextlib.closing(engine_up.client()) as client:
        base = base_images.busybox_image(client)
    env = job_env(base_env, engine_up, workdir)
    cli = CLI(["run", base, "sh", "-c", "echo started; sleep 300"], env, workdir)
    code = engine_goes_away(cli, engine_up, STOPS[stop], once_printed="started")
    assert code == 4, cli.stderr
    assert_one_error_line(cli, "the Docker engine stopped answering")
    # Said once, with what to do about the container: not a warning a stage.
    warnings = [line for line in cli.stderr if "could not be removed" in line]
    assert len(warnings) == 1 and "ci-integration cleanup" in warnings[0], cli.stderr

    engine_up.start()
    janitor = CLI(["cleanup", "--grace", "0s", "--json"], env, workdir)
    assert janitor.finish(timeout=60) == 0, janitor.stderr
    assert ours(engine_up) == [], janitor.stdout
