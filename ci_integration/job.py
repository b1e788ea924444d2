"""One run of the command line: its environment, its folder, its CI context and the
stores it opens.

``cli.main`` makes the Job and hands it to the command, so no command rebuilds its
world: the CI context is detected at most once, when first asked (``cleanup`` never
asks), and each store is opened once, seen through the job's scope chain and its
read-only rule (a fork's pull request, $CI_INTEGRATION_READ_ONLY, $ACTIONS_CACHE_MODE).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from pathlib import Path

from ci_integration import keys
from ci_integration.context import CIContext
from ci_integration.store import Store, job_view, open_store
from ci_integration.store.scoped import ScopedStore


@dataclasses.dataclass(eq=False)
class Job:
    env: Mapping[str, str]
    cwd: Path
    detect_context: Callable[[], CIContext]
    _backends: dict[str | None, Store] = dataclasses.field(default_factory=dict, repr=False)
    _views: dict[str | None, ScopedStore] = dataclasses.field(default_factory=dict, repr=False)

    @functools.cached_property
    def ci(self) -> CIContext:
        """Which CI, branch, pull request and scopes: detected on first use."""
        return self.detect_context()

    def backend(self, url: str | None) -> Store:
        """The store named by ``url`` (else $CI_INTEGRATION_STORE, else the local
        default), whole: for listing and pruning, which are not one job's."""
        if url not in self._backends:
            self._backends[url] = open_store(url, self.env, lambda: self.ci)
        return self._backends[url]

    def store(self, url: str | None) -> ScopedStore:
        """The store as this job sees it: reads along its scope chain, writes to its
        own scope, and none at all where the job is read-only."""
        if url not in self._views:
            self._views[url] = job_view(
                self.backend(url), self.env, self.ci.scope_chain, self.ci.read_only_reason
            )
        return self._views[url]

    def render_key(self, template: str) -> str:
        """A cache key with its placeholders ({branch}, {hash:GLOB}...) filled in."""
        values = keys.placeholder_values(self.ci.branch, self.ci.scope)
        return keys.render(template, values=values, cwd=self.cwd)
