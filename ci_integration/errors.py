"""Every fatal error the tool raises, each with the exit code it ends the process with.

Inner code raises these and never exits; ``cli.main`` turns them into exit codes
in one place. The table of codes is documented in the README.
"""

from __future__ import annotations

import signal


class CIIntegrationError(Exception):
    """Base class: a failure the user can act on, printed as one line."""

    exit_code = 1


class UsageError(CIIntegrationError):
    """Bad arguments or bad input: a key, a URL, a missing file."""

    exit_code = 2


class CacheError(CIIntegrationError):
    """The cache store failed. Fatal only in --strict mode; otherwise a warning."""

    exit_code = 3


class CorruptDataError(CacheError):
    """Stored data failed its integrity check or is not what it claims to be."""


class UnsafeArchiveError(CorruptDataError):
    """An archive tried to write outside its target or to create a special file."""


class EngineError(CIIntegrationError):
    """The Docker engine is unreachable or refused a request."""

    exit_code = 4


class EngineGone(EngineError):
    """The engine stopped answering altogether (no socket, connection lost): asking
    it anything more is pointless until it is back."""


class BuildError(CIIntegrationError):
    """The image build itself failed."""

    exit_code = 5


class ContainerStartError(CIIntegrationError):
    """The engine could not start the command in a container: 127 when the command is
    not found, 126 when it cannot be executed, as a shell reports them."""

    def __init__(self, message: str, *, not_found: bool) -> None:
        self.exit_code = 127 if not_found else 126
        super().__init__(message)


class CommandError(CIIntegrationError):
    """An external command failed; carries the command line, its exit code and output."""

    exit_code = 1

    def __init__(self, argv: list[str], returncode: int, output: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        tail = output.strip().splitlines()[-1:] if output else []
        detail = f": {tail[0]}" if tail else ""
        super().__init__(f"{argv[0]} exited with code {returncode}{detail}")


class BuildStatusUnavailable(Exception):
    """A CI could not say whether a build still runs. Never fatal, so not a
    CIIntegrationError: the janitor warns and judges the container by its age.
    ``unreachable``: the server did not answer at all, so it is asked no more."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        self.unreachable = unreachable
        super().__init__(message)


class Interrupted(CIIntegrationError):
    """A signal stopped the command; exits 128 + the signal number, as shells do."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def found_behind(exc: BaseException, kinds: type | tuple[type, ...]) -> BaseException | None:
    """``exc`` or the first exception behind it (its cause, else its context) that is
    one of ``kinds``: libraries wrap what they catch, the engine's lost connection or
    the Interrupted a signal handler raised inside them."""
    seen: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in seen:  # a chain can loop back on itself
        if isinstance(link, kinds):
            return link
        seen.append(link)
        link = link.__cause__ or link.__context__
    return None
