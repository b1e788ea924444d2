"""The engine matrix of the integration suites (tests/support/engines.py).

A test that asks for ``engine`` runs once on each engine of the matrix; one that also
asks for ``builder`` runs once for each builder each engine has: BuildKit (built into
Docker 20.10's client, buildx on the newer ones) and the legacy builder (not on the
containerd image store, where Docker builds with BuildKit only). A test that asks
for ``buildkit_builder`` gets the engine's BuildKit builder. Tests of one engine that
share the large Debian image (the ``debian`` xdist group) run on one worker per
engine, so each engine's import of it happens once.
"""

from __future__ import annotations

import pytest

from tests.support import engines

BUILDERS = {
    "20.10": ("buildkit", "legacy"),
    "26": ("buildx", "legacy"),
    "28": ("buildx", "legacy"),
    "28-containerd": ("buildx",),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" not in metafunc.fixturenames:
        return
    kinds = [kind.name for kind in engines.matrix()]
    if "builder" in metafunc.fixturenames:
        pairs = [(kind, builder) for kind in kinds for builder in BUILDERS[kind]]
        metafunc.parametrize(("engine", "builder"), pairs, indirect=["engine"],
                             ids=[f"{kind}-{builder}" for kind, builder in pairs])  # fmt: skip
    else:
        metafunc.parametrize("engine", kinds, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest, engine_pool) -> engines.Engine:
    """The engine of this run of the test, started on first use in this process."""
    return engine_pool.get(engines.KINDS[request.param])


@pytest.fixture
def buildkit_builder(engine: engines.Engine) -> str:
    return BUILDERS[engine.name][0]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test of the ``debian`` group joins its engine's group as well (xdist joins the
    names): each engine's Debian tests go to one worker, the engines' to different ones."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        grouped = any(mark.args == ("debian",) for mark in item.iter_markers("xdist_group"))
        if grouped and callspec is not None and "engine" in callspec.params:
            item.add_marker(pytest.mark.xdist_group(f"engine-{callspec.params['engine']}"))
