"""Parsing a Dockerfile into its build stages, as BuildKit reads it; nothing here talks to
an engine. This module reads the global ARGs and the FROM lines and puts the rest together:
lexer (text to instructions), vars (ARG, ENV and substitution), stages (what each stage
needs), model (the result). Import from here: the names other modules use from those are
re-exported, so callers need one module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from ci_integration.errors import UsageError
from ci_integration.images.dockerfile.lexer import (
    INSTRUCTIONS,
    Malformed,
    physical_lines,
    read_directives,
    read_instructions,
)
from ci_integration.images.dockerfile.model import (
    CACHE_SHARING,
    CacheMount,
    Dockerfile,
    Instruction,
    Stage,
)
from ci_integration.images.dockerfile.stages import SCRATCH, StageAssembler, StageHeader
from ci_integration.images.dockerfile.vars import (
    Lookup,
    Scope,
    arg_declarations,
    expand,
    expand_or_keep,
    expand_or_unknown,
)

__all__ = [
    "AUTOMATIC_PLATFORM_ARGS",
    "CACHE_SHARING",
    "INSTRUCTIONS",
    "NO_BUILD_ARGS",
    "SCRATCH",
    "CacheMount",
    "Dockerfile",
    "Instruction",
    "Lookup",
    "Stage",
    "expand",
    "load",
    "parse",
]

NO_BUILD_ARGS: Mapping[str, str] = MappingProxyType({})
# BuildKit sets these from the platforms of the build; we only know them if given as build args.
AUTOMATIC_PLATFORM_ARGS = frozenset(
    side + part for side in ("BUILD", "TARGET") for part in ("PLATFORM", "OS", "ARCH", "VARIANT")
)

_STAGE_NAME = re.compile(r"[a-z][a-z0-9_.-]*")


def load(path: Path, build_args: Mapping[str, str] = NO_BUILD_ARGS) -> Dockerfile:
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UsageError(f"Dockerfile not found: {path} (pass -f PATH)") from None
    except OSError as exc:
        raise UsageError(f"cannot read Dockerfile {path}: {exc.strerror} (pass -f PATH)") from None
    except UnicodeDecodeError:
        raise UsageError(f"Dockerfile {path} is not UTF-8 text") from None
    return _parse(text, build_args, source=str(path))


def parse(text: str, build_args: Mapping[str, str] = NO_BUILD_ARGS) -> Dockerfile:
    """The Dockerfile's stages; malformed input raises UsageError naming the line."""
    return _parse(text, build_args, source="Dockerfile")


def _parse(text: str, build_args: Mapping[str, str], source: str) -> Dockerfile:
    lines = physical_lines(text)
    try:
        directives = read_directives(lines)
        escape = directives.get("escape", "\\")
        instructions = read_instructions(lines, escape)
        return _assemble(lines, instructions, directives, build_args)
    except Malformed as exc:
        raise UsageError(f"{source} line {exc.line}: {exc}") from None


def _assemble(
    lines: list[str],
    instructions: list[Instruction],
    directives: Mapping[str, str],
    build_args: Mapping[str, str],
) -> Dockerfile:
    escape = directives.get("escape", "\\")
    starts = [i for i, instruction in enumerate(instructions) if instruction.keyword == "FROM"]
    preamble = instructions[: starts[0]] if starts else instructions
    for instruction in preamble:
        if instruction.keyword != "ARG":
            raise Malformed(
                instruction.line,
                f"{instruction.keyword} before the first FROM: only ARG may come before it",
            )
    if not starts:
        raise Malformed(max(len(lines), 1), "no FROM instruction: a stage starts with FROM IMAGE")
    defaults, global_scope = _global_args(preamble, build_args, escape)
    headers = [_read_from(instructions[i], global_scope, escape) for i in starts]
    _check_unique_names(headers)
    assembler = StageAssembler(headers, global_scope, build_args, escape)
    ends = [*starts[1:], len(instructions)]
    for index, (start, end) in enumerate(zip(starts, ends, strict=True)):
        first_line = headers[index].line
        last_line = headers[index + 1].line - 1 if index + 1 < len(headers) else len(lines)
        text = "\n".join(lines[first_line - 1 : last_line])
        assembler.add(index, tuple(instructions[start + 1 : end]), text)
    return Dockerfile(
        stages=tuple(assembler.stages),
        global_args=defaults,
        syntax=directives.get("syntax"),
        escape=escape,
    )


def _global_args(
    preamble: list[Instruction], build_args: Mapping[str, str], escape: str
) -> tuple[dict[str, str | None], Scope]:
    """The global ARGs' defaults, and the scope FROM lines see (build args applied)."""
    defaults: dict[str, str | None] = {}
    plain = Scope(args={name: None for name in AUTOMATIC_PLATFORM_ARGS})
    effective = Scope(
        args={name: build_args.get(name) for name in AUTOMATIC_PLATFORM_ARGS},
    )
    for instruction in preamble:
        for name, raw in arg_declarations(instruction, escape):
            try:
                default = None if raw is None else expand_or_keep(raw, plain.lookup, escape)
                if name in build_args:
                    effective.args[name] = build_args[name]
                elif raw is not None:
                    effective.args[name] = expand_or_unknown(raw, effective.lookup, escape)
            except ValueError as exc:
                raise Malformed(instruction.line, str(exc)) from None
            defaults[name] = default
            if default is not None:
                plain.args[name] = default
    return defaults, effective


def _read_from(instruction: Instruction, scope: Scope, escape: str) -> StageHeader:
    words = instruction.arguments.split()
    name = None
    if len(words) == 3 and words[1].lower() == "as":
        name = words[2].lower()
        if not _STAGE_NAME.fullmatch(name):
            raise Malformed(
                instruction.line,
                f"invalid stage name {words[2]!r}: use a letter, then letters, digits, - _ .",
            )
    elif len(words) != 1:
        raise Malformed(instruction.line, "FROM takes an image and an optional AS NAME")
    try:
        base = expand_or_keep(words[0], scope.lookup, escape)
        platform = instruction.flag("platform")
        if platform is not None:
            platform = expand_or_keep(platform, scope.lookup, escape)
    except ValueError as exc:
        raise Malformed(instruction.line, str(exc)) from None
    if not base:
        raise Malformed(instruction.line, f"FROM {words[0]} names no image: set its build arg")
    return StageHeader(instruction.line, base, platform, name)


def _check_unique_names(headers: list[StageHeader]) -> None:
    seen: dict[str, int] = {}
    for header in headers:
        if header.name is None:
            continue
        if header.name in seen:
            first = seen[header.name]
            raise Malformed(header.line, f"stage name {header.name!r} is taken by line {first}")
        seen[header.name] = header.line
