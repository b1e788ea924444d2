"""Every YAML example of the README and the actions' READMEs, run under act as a user
pastes it into a repository of theirs, and passing.

An example is changed in two ways only, both to reach this checkout instead of a
host that is not there:

- ``OWNER/ci-integration/actions/NAME@v1`` becomes ``./actions/NAME``: the
  repository under test holds the actions, as a user's fork would;
- ``git+https://github.com/OWNER/ci-integration@v1`` becomes this checkout's path.

A list of steps goes into one job after ``actions/checkout`` (act checks the
repository out locally); a job goes into a workflow. S3 is moto's server, the
GitHub cache act's own, the images are tagged from a base made here (no pull).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.wrappers import Act, make_repository
from tests.wrappers.test_doc_examples import EXAMPLES, as_workflow

# What `make -j4 test` does in the examples' images and on the runner: it compiles
# into $CCACHE_DIR, so that the cache steps have something to keep.
FAKE_MAKE = """\
#!/bin/sh
mkdir -p "${CCACHE_DIR:-.ccache}"
echo object >"${CCACHE_DIR:-.ccache}/main.o"
echo "make $*: tests passed"
"""
MAKEFILE = """\
all test:
\t@mkdir -p "$(CCACHE_DIR)" && echo object >"$(CCACHE_DIR)/main.o" && echo "make: tests passed"
"""
SOURCES = {"src/main.c": "int main(void) { return 0; }\n", "src/main.h": "#pragma once\n"}
TOOLCHAIN_DOCKERFILE = """\
ARG BASE
FROM ${BASE} AS build
ARG GCC_VERSION=11
COPY make /bin/make
RUN chmod +x /bin/make && mkdir /out && echo "<testsuite gcc='$GCC_VERSION'/>" >/out/report.xml
"""
# The images the examples run, made from the same base; removed at the end.
TOOLCHAIN_TAGS = ("example/toolchain:12", "ghcr.io/example/toolchain:12")


@dataclasses.dataclass
class Ran:
    log: str
    rc: int


@dataclasses.dataclass
class Case:
    check: Callable[[list[Ran]], None]
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    event: str = "push"
    runs: int = 1  # a second run shows what the first one cached
    s3: bool = False
    show: tuple[str, ...] = ()  # files the example leaves, printed by a last step
    leaves: Path | None = None  # a folder outside the job the example writes to


def succeeded(runs: list[Ran]) -> None:
    for ran in runs:
        assert ran.rc == 0 and "Job succeeded" in ran.log, ran.log[-6000:]


def said(*lines: str, run: int = -1) -> Callable[[list[Ran]], None]:
    def check(runs: list[Ran]) -> None:
        succeeded(runs)
        for line in lines:
            assert line in runs[run].log, f"{line!r} not in\n{runs[run].log[-6000:]}"

    return check


def on_each_runner(line: str) -> Callable[[list[Ran]], None]:
    """The matrix's two jobs each said ``line``."""

    def check(runs: list[Ran]) -> None:
        succeeded(runs)
        assert runs[-1].log.count(line) == 2, runs[-1].log[-6000:]

    return check


def toolchain_files(base: str) -> dict[str, str]:
    return {
        "docker/Dockerfile": TOOLCHAIN_DOCKERFILE.replace("ARG BASE", f"ARG BASE={base}", 1),
        "docker/make": FAKE_MAKE,
        **SOURCES,
    }


def cases(base: str) -> dict[str, Case]:
    toolchain = toolchain_files(base)
    return {
        "README.md#0": Case(said("removed 0 entries"), event="schedule", s3=True),
        "README.md#1": Case(
            said("restored ccache-linux-", "comes whole from the cache", "tests passed"),
            files=toolchain,
            runs=2,
            s3=True,
        ),
        "README.md#2": Case(
            said("make -j4 test: tests passed", "ccache saved"),
            files=SOURCES,
            leaves=Path("/var/cache/ci-integration"),
        ),
        "README.md#3": Case(on_each_runner("ci-integration containers, removed"), event="schedule"),
        "README.md#4": Case(said("cache miss for build-linux-")),
        "actions/build/README.md#0": Case(
            said("<testsuite gcc='12'/>"), files=toolchain, show=("reports/report.xml",)
        ),
        "actions/cache/README.md#0": Case(
            said("restored ccache-linux-", "make: tests passed"),
            files={"Makefile": MAKEFILE, **SOURCES},
            runs=2,
        ),
        "actions/cleanup/README.md#0": Case(said("ci-integration containers, removed")),
        "actions/context/README.md#0": Case(said("branch-main")),
        "actions/export-cache-env/README.md#0": Case(said("cache miss for ccache-linux")),
        "actions/run/README.md#0": Case(said("make -j4 test: tests passed"), files=SOURCES),
    }


def example_id(document: Path, index: int) -> str:
    return f"{document.relative_to(Path(__file__).parents[2])}#{index}"


def pasted(block: str, checkout: Path, show: tuple[str, ...] = ()) -> str:
    """The example as a workflow file of the user's repository; a last step prints
    the files in ``show``."""
    text = re.sub(r"OWNER/ci-integration/(actions/[A-Za-z/-]+)@v1", r"./\1", block)
    text = text.replace("git+https://github.com/OWNER/ci-integration@v1", checkout.as_uri())
    workflow = yaml.safe_load(as_workflow(text))
    # YAML 1.1 reads `on:` as the key true: written back under its own name.
    workflow = {("on" if key is True else key): value for key, value in workflow.items()}
    for job in workflow["jobs"].values():
        if not any("actions/checkout" in str(step.get("uses", "")) for step in job["steps"]):
            job["steps"].insert(0, {"uses": "actions/checkout@v4"})
        if show:
            job["steps"].append(
                {"name": "what the example left", "run": "cat -- " + " ".join(show)}
            )
    return yaml.safe_dump(workflow, sort_keys=False)


@pytest.fixture
def toolchain_images(docker_client, busybox_image, tmp_path) -> Iterator[str]:
    """The examples' toolchain images: the base with the fake make in it."""
    context = tmp_path / "toolchain"
    context.mkdir()
    (context / "make").write_text(FAKE_MAKE)
    (context / "Dockerfile").write_text(
        TOOLCHAIN_DOCKERFILE.replace("ARG BASE", f"ARG BASE={busybox_image}", 1)
    )
    image, _ = docker_client.images.build(path=str(context), rm=True)
    for tag in TOOLCHAIN_TAGS:
        image.tag(tag)
    yield busybox_image
    for repository in {tag.rsplit(":", 1)[0] for tag in TOOLCHAIN_TAGS}:
        for image in docker_client.images.list(name=repository):
            for tag in image.tags:
                docker_client.images.remove(tag, force=True)


def test_every_example_has_a_case():
    ids = {example_id(document, index) for document, index, _ in EXAMPLES}
    assert ids == set(cases("base"))


@pytest.mark.parametrize(("document", "index", "block"), EXAMPLES,
                         ids=[example_id(d, i) for d, i, _ in EXAMPLES])  # fmt: skip
def test_an_example_runs_as_written(document, index, block, toolchain_images, request,
                                    tmp_path, tmp_path_factory):  # fmt: skip
    case = cases(toolchain_images)[example_id(document, index)]
    checkout = Path(__file__).parents[2]
    workflow = pasted(block, checkout, case.show)
    repository = make_repository(tmp_path / "repo", files={
        **case.files, ".github/workflows/example.yml": workflow})  # fmt: skip
    env = {"CI_INTEGRATION_VENV_DIR": str(tmp_path_factory.getbasetemp() / "action-venvs")}
    secrets = {}
    if case.s3:
        s3_env = request.getfixturevalue("s3_env")
        ensure_bucket(s3_env, "ci-cache")
        env["CI_INTEGRATION_S3_ENDPOINT"] = s3_env["CI_INTEGRATION_S3_ENDPOINT"]
        env["AWS_REGION"] = s3_env["AWS_REGION"]
        secrets = {"CACHE_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"],
                   "CACHE_SECRET": s3_env["AWS_SECRET_ACCESS_KEY"]}  # fmt: skip
    # ci-integration on the runner's PATH, for the examples that call it themselves.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    act = Act(repository, tmp_path / "act", secrets=secrets, path=path)
    left_before = case.leaves is not None and case.leaves.exists()
    try:
        runs = [Ran(done.stdout, done.returncode)
                for done in (act.run(case.event, env=env) for _ in range(case.runs))]  # fmt: skip
        case.check(runs)
    finally:
        if case.leaves is not None and not left_before:
            shutil.rmtree(case.leaves, ignore_errors=True)


def ensure_bucket(s3_env: dict[str, str], name: str) -> None:
    from tests.store.conftest import s3_admin

    client = s3_admin(s3_env)
    if name not in {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=name)
