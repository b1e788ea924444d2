"""What the tool tells people: log lines, CI log groups, outputs and summaries.

Secret values from the environment and signatures in URLs are masked in every
line that goes through logging.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from ci_integration.errors import UsageError

log = logging.getLogger("ci_integration")

_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|CREDENTIAL|_KEY$|^AWS_SESSION", re.IGNORECASE)
_SIGNED_QUERY = re.compile(
    r"([?&](?:sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|token|se|sv)=)"
    r"[^&\s\"']+",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"(\w+://)[^/\s:@]+:[^/\s@]+@")
MASK = "***"


class Redactor:
    """Masks secret values and signed URL parts in what the tool prints."""

    def __init__(self, secrets: set[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        text = _SIGNED_QUERY.sub(rf"\1{MASK}", text)
        return _USERINFO.sub(rf"\1{MASK}@", text)


def secrets_in(env: Mapping[str, str]) -> set[str]:
    return {value for name, value in env.items() if _SECRET_NAME.search(name) and value}


class _Formatter(logging.Formatter):
    def __init__(self, github: bool, redactor: Redactor) -> None:
        super().__init__()
        self.github = github
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.ERROR:
            line = f"::error::{message}" if self.github else f"ci-integration: error: {message}"
        elif record.levelno >= logging.WARNING:
            line = f"::warning::{message}" if self.github else f"ci-integration: warning: {message}"
        else:
            line = message
        # The whole line, traceback included: a secret may hide in any part of it.
        return self.redactor.redact(line)


_redactor = Redactor(set())
# How often a transfer says how far it is in a CI log; the user may say otherwise.
PROGRESS_ENV = "CI_INTEGRATION_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 10.0
_progress_seconds = DEFAULT_PROGRESS_SECONDS


def redact(text: str) -> str:
    """``text`` with the secrets of the job's environment masked (see ``configure``)."""
    return _redactor.redact(text)


def configure(env: Mapping[str, str], *, verbose: bool = False) -> Redactor:
    """Send the tool's log to stderr, masked; GitHub gets annotations for warnings.
    Everything else the tool prints or writes goes through ``redact`` too."""
    global _redactor
    handler = logging.StreamHandler(sys.stderr)
    redactor = _redactor = Redactor(secrets_in(env))
    handler.setFormatter(_Formatter(env.get("GITHUB_ACTIONS") == "true", redactor))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    _configure_progress(env.get(PROGRESS_ENV, ""))
    return redactor


def _configure_progress(text: str) -> None:
    global _progress_seconds
    _progress_seconds = DEFAULT_PROGRESS_SECONDS
    if not text:
        return
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        log.warning("%s=%s is not a number of seconds above 0: ignored", PROGRESS_ENV, text)
        return
    _progress_seconds = seconds


@contextlib.contextmanager
def group(title: str, env: Mapping[str, str]) -> Iterator[None]:
    """A foldable section of the CI log."""
    github = env.get("GITHUB_ACTIONS") == "true"
    print(f"::group::{title}" if github else f"--- {title}", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        if github:
            print("::endgroup::", file=sys.stderr, flush=True)


def write_github_output(path: str | Path, values: Mapping[str, str]) -> None:
    """Append outputs in the runner's file format; multi-line values use a heredoc."""
    lines = []
    for name, value in values.items():
        if "\n" in value:
            delimiter = f"ghadelimiter_{os.urandom(16).hex()}"
            lines.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            lines.append(f"{name}={value}\n")
    with _runner_file(path, "GITHUB_OUTPUT", "outputs") as stream:
        stream.writelines(redact(line) for line in lines)


def append_step_summary(path: str | Path, markdown: str) -> None:
    with _runner_file(path, "GITHUB_STEP_SUMMARY", "summary") as stream:
        stream.write(redact(markdown.rstrip("\n")) + "\n")


@contextlib.contextmanager
def _runner_file(path: str | Path, variable: str, what: str) -> Iterator[TextIO]:
    """A file the runner gave the step, opened to append; trouble is one line."""
    try:
        with open(path, "a", encoding="utf-8") as stream:
            yield stream
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(
            f"cannot write the step's {what} to {variable}={path}: {reason}"
            f" (set {variable} to a writable file, as the runner does)"
        ) from exc


def human_bytes(count: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(count), 0
    while abs(value) >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{int(count)} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def emit(
    values: Mapping[str, object], *, as_json: bool, github_output: bool, env: Mapping[str, str]
) -> None:
    """A command's result: text or JSON on stdout, and the runner's outputs file if asked."""
    if as_json:
        print(redact(json.dumps(values, indent=2, sort_keys=True)))
    else:
        width = max((len(name) for name in values), default=0)
        for name, value in values.items():
            print(redact(f"{name + ':':<{width + 1}} {as_text(value)}"))
    if github_output:
        path = env.get("GITHUB_OUTPUT")
        if not path:
            raise UsageError("--github-output needs GITHUB_OUTPUT: run it in a GitHub Actions step")
        write_github_output(
            path, {name.replace("_", "-"): as_text(v) for name, v in values.items()}
        )


def as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)


class Progress:
    """Bytes moved of the total, the rate and the time left. On a terminal, one line
    redrawn at most twice a second; in a CI log (no terminal), a line every
    ``every`` seconds (default: ``$CI_INTEGRATION_PROGRESS_SECONDS``, else 10), so
    that a long transfer shows it is moving."""

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.clock = clock
        self.live = self.stream.isatty()
        self.every = 0.5 if self.live else every or _progress_seconds
        self.started = clock()
        self.done = 0
        self._drawn = self.started
        self._lines = 0
        self._lock = threading.Lock()

    @property
    def seconds(self) -> float:
        return self.clock() - self.started

    def set_total(self, total: int) -> None:
        """The total, once it is known (a save learns it as it goes)."""
        self.total = total

    def advance(self, count: int) -> None:
        with self._lock:
            self.done += count
            now = self.clock()
            if now - self._drawn >= self.every:
                self._drawn = now
                self._draw()

    def close(self) -> None:
        if self.live and self._lines:
            self._draw()
            self.stream.write("\n")

    def describe(self) -> str:
        rate = self.done / max(self.seconds, 1e-6)
        if not self.total:
            return f"{self.label}: {human_bytes(self.done)}, {human_bytes(rate)}/s"
        share = min(self.done / self.total, 1.0)
        left = max(self.total - self.done, 0) / rate if rate > 0 else float("inf")
        eta = "?" if left == float("inf") else f"{left:.0f} s"
        return (
            f"{self.label}: {human_bytes(self.done)} of {human_bytes(self.total)}"
            f" ({share:.0%}), {human_bytes(rate)}/s, {eta} left"
        )

    def _draw(self) -> None:
        self._lines += 1
        if self.live:
            self.stream.write(f"\r{self.describe():<72}")
        else:
            self.stream.write(self.describe() + "\n")
        self.stream.flush()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(as_text(cell).replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines) + "\n"


def text_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(header), *([as_text(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )
