"""Which CI runs this job, and for which branch, pull request, commit and build.

Each provider is a module that is a ``CIProvider`` (``is_active(env)`` and
``detect(env)``, checked by mypy); nothing else in the tool reads CI variables.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ci_integration.context import github, jenkins, local
from ci_integration.context.model import CIContext, Provider, parse_int, parse_switch

__all__ = ["CIContext", "Provider", "detect"]

log = logging.getLogger(__name__)

OVERRIDE_PREFIX = "CI_INTEGRATION_"


class CIProvider(Protocol):
    def is_active(self, env: Mapping[str, str]) -> bool:
        """Whether this CI runs the job whose environment is ``env``."""

    def detect(self, env: Mapping[str, str]) -> CIContext:
        """The job's context, from ``env`` (and what the CI leaves on disk) alone."""


CI_PROVIDERS: dict[Provider, CIProvider] = {
    Provider.GITHUB_ACTIONS: github,
    Provider.JENKINS: jenkins,
}
_GAPS_GIT_CAN_FILL = ("default_branch", "commit", "repository")


def detect(env: Mapping[str, str], cwd: Path | None = None) -> CIContext:
    """The context of the job running with ``env``; ``cwd``, when given, is asked of git.

    Detection never fails: a broken environment gives warnings and the best context
    it can. ``CI_INTEGRATION_<FIELD>`` variables win over everything detected.
    """
    provider = _provider(env)
    if provider is Provider.LOCAL:
        context = local.detect(env, cwd) if cwd is not None else CIContext(Provider.LOCAL)
    else:
        context = CI_PROVIDERS[provider].detect(env)
        if cwd is not None and any(getattr(context, gap) is None for gap in _GAPS_GIT_CAN_FILL):
            context = _fill_from_git(context, local.detect(env, cwd, say_why=False))
    return apply_overrides(context, env)


def _provider(env: Mapping[str, str]) -> Provider:
    forced = env.get(OVERRIDE_PREFIX + "PROVIDER")
    if forced:
        try:
            return Provider(forced)
        except ValueError:
            names = ", ".join(p.value for p in Provider)
            log.warning("ignoring %sPROVIDER=%s: use one of %s", OVERRIDE_PREFIX, forced, names)
    for provider, module in CI_PROVIDERS.items():
        if module.is_active(env):
            return provider
    return Provider.LOCAL


def _fill_from_git(context: CIContext, from_git: CIContext) -> CIContext:
    gaps = {
        name: getattr(from_git, name)
        for name in _GAPS_GIT_CAN_FILL
        if getattr(context, name) is None and getattr(from_git, name) is not None
    }
    return dataclasses.replace(context, **gaps)


def apply_overrides(context: CIContext, env: Mapping[str, str]) -> CIContext:
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(CIContext):
        if field.name == "provider":
            continue
        name = field.name.removesuffix("_override").upper()
        raw = env.get(OVERRIDE_PREFIX + name, "")
        if not raw:
            continue
        if field.type == "bool":
            switch = parse_switch(raw)
            if switch is None:
                log.warning("ignoring %s%s=%s: use true or false", OVERRIDE_PREFIX, name, raw)
                continue
            changes[field.name] = switch
        elif field.type == "int | None":
            number = parse_int(raw)
            if number is None:
                log.warning("ignoring %s%s=%s: not a number", OVERRIDE_PREFIX, name, raw)
                continue
            changes[field.name] = number
        else:
            changes[field.name] = raw
    if "pr_number" in changes and "is_pull_request" not in changes:
        changes["is_pull_request"] = True
    return dataclasses.replace(context, **changes)
