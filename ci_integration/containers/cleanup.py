"""The janitor's decision about one container: a pure function of its labels and of
facts gathered elsewhere (is the owner running, is the build running, how old is it),
so that every rule can be tested with plain data.

The rules, first match wins:

1. Not carrying the tool's label: never touched.
2. Kept with ``--keep``: removed only by age.
3. Its owner process on this host still runs: kept, whatever else is known.
4. Its owner is gone: removed, once the container is older than the grace period.
5. The CI says the build is over: removed; the CI says it runs: kept.
6. Nothing else can judge it (another host, a CI that cannot be reached, no CI):
   removed when older than ``--max-age``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ci_integration.containers import labels as names
from ci_integration.containers.labels import Build

_PROVIDER_NAMES = {"jenkins": "Jenkins", "github-actions": "GitHub"}


@dataclasses.dataclass(frozen=True)
class Policy:
    max_age: float | None
    """Seconds after which a container nothing else can judge is removed; None: never."""
    grace: float
    """Seconds a container is left alone after it was created, even when its owner is gone."""


@dataclasses.dataclass(frozen=True)
class Facts:
    age: float
    """Seconds since the engine created the container."""
    owner_running: bool | None = None
    """None: this host cannot tell (another host or pid namespace, no owner recorded)."""
    build_running: bool | None = None
    """None: the CI was not asked, or could not answer."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    remove: bool
    reason: str


def decide(labels: Mapping[str, str], facts: Facts, policy: Policy) -> Verdict:
    if not names.is_ours(labels):
        return Verdict(False, "not started by ci-integration")
    if names.is_kept(labels):
        return _by_age(facts, policy, "kept with --keep")
    owner = names.owner_of(labels)
    if facts.owner_running is True:
        return Verdict(False, f"its owner (pid {owner.pid}) is running")
    if facts.owner_running is False:
        if facts.age >= policy.grace:
            return Verdict(True, f"its owner (pid {owner.pid}) is gone")
        return Verdict(False, f"its owner (pid {owner.pid}) is gone; within the grace period")
    build = Build.of(labels)
    ci = _PROVIDER_NAMES.get(build.provider, build.provider)
    if facts.build_running is False:
        return Verdict(True, f"{ci} says {build.describe()} is over")
    if facts.build_running is True:
        return Verdict(False, f"{ci} says {build.describe()} is running")
    return _by_age(facts, policy, "nothing says whether its build is over")


def _by_age(facts: Facts, policy: Policy, why: str) -> Verdict:
    if policy.max_age is not None and facts.age > policy.max_age:
        return Verdict(True, f"{why}; older than {duration(policy.max_age)}")
    return Verdict(False, f"{why}; {duration(facts.age)} old")


def duration(seconds: float) -> str:
    """``45s``, ``12m``, ``5h``, ``3d``: the largest whole unit."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(max(seconds, 0))}s"
