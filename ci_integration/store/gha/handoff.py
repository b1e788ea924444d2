"""The cache service's variables as actions/export-cache-env hands them over: a JSON
file of its own (0600, in a 0700 folder under ``$RUNNER_TEMP``) named by
``CI_INTEGRATION_CACHE_ENV_FILE``, read once and removed, so the token reaches this
step and no later one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from ci_integration.errors import UsageError

log = logging.getLogger(__name__)

ENV_FILE = "CI_INTEGRATION_CACHE_ENV_FILE"
NAMES = frozenset(
    {
        "ACTIONS_CACHE_URL",
        "ACTIONS_RESULTS_URL",
        "ACTIONS_RUNTIME_TOKEN",
        "ACTIONS_CACHE_SERVICE_V2",
        "ACTIONS_CACHE_MODE",
    }
)
# As export-cache-env names it; any other file is refused, and never removed.
FOLDER_PREFIX, FILE_NAME = "ci-integration-cache-env-", "env.json"


def take_handed_env(env: Mapping[str, str]) -> Mapping[str, str]:
    """``env`` with the handed-over variables in it, their file gone; ``env`` itself
    when nothing was handed over."""
    named = env.get(ENV_FILE, "")
    if not named:
        return env
    path = Path(named)
    _check_is_handoff(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.warning(
            "%s is gone (a ci-integration step took it already): run export-cache-env"
            " before each step that uses gha://",
            named,
        )
        return {name: value for name, value in env.items() if name != ENV_FILE}
    finally:
        _remove(path)
    try:
        handed = json.loads(text)
    except ValueError:
        raise UsageError(
            f"{ENV_FILE}: {named} is not JSON: hand it over with export-cache-env"
        ) from None
    if not isinstance(handed, dict):
        raise UsageError(f"{ENV_FILE}: {named} is not a JSON object")
    kept = {name: value for name, value in env.items() if name != ENV_FILE}
    kept.update({str(k): str(v) for k, v in handed.items() if k in NAMES})
    return kept


def _check_is_handoff(path: Path) -> None:
    if path.name != FILE_NAME or not path.parent.name.startswith(FOLDER_PREFIX):
        raise UsageError(
            f"{ENV_FILE}={path} is not a file export-cache-env made"
            f" ({FOLDER_PREFIX}*/{FILE_NAME}): pass its env-file output"
        )
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(path)
        private = not info.st_mode & 0o077 and info.st_uid == os.getuid()
        if not stat.S_ISREG(info.st_mode) or not private:
            raise UsageError(
                f"{ENV_FILE}={path} is not a private file of this user (0600): refused"
            )


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()
