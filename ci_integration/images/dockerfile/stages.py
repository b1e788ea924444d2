"""What each stage needs, read from its instructions in order: the earlier stages and the
images it builds on or copies from, the build-context paths it copies or bind-mounts, the
caches it mounts. Names resolve against the stages before it, as BuildKit resolves them.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Mapping

from ci_integration.images.dockerfile.lexer import HEREDOC, Malformed, json_list
from ci_integration.images.dockerfile.model import CACHE_SHARING, CacheMount, Instruction, Stage
from ci_integration.images.dockerfile.vars import (
    Scope,
    arg_declarations,
    env_assignments,
    expand_or_keep,
    expand_or_unknown,
)

SCRATCH = "scratch"

_REMOTE_SOURCE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|git@")


@dataclasses.dataclass(frozen=True)
class StageHeader:
    """A stage's FROM line; all are read first so a --from can tell a later stage from an image."""

    line: int
    base: str
    platform: str | None
    name: str | None


class StageAssembler:
    """Builds the stages in order, each resolving its names against the ones before it."""

    def __init__(
        self,
        headers: list[StageHeader],
        global_scope: Scope,
        build_args: Mapping[str, str],
        escape: str,
    ) -> None:
        self.headers = headers
        self.global_scope = global_scope
        self.build_args = build_args
        self.escape = escape
        self.stages: list[Stage] = []
        self.scopes: list[Scope] = []

    def add(self, index: int, instructions: tuple[Instruction, ...], text: str) -> None:
        header = self.headers[index]
        needs = _Needs()
        scope = self._base_scope(header, needs)
        parent = needs.stages[0] if needs.stages else None  # only FROM has named one yet
        for instruction in instructions:
            try:
                self._read(instruction, index, scope, needs)
            except ValueError as exc:
                raise Malformed(instruction.line, str(exc)) from None
        self.scopes.append(scope)
        self.stages.append(
            Stage(
                index=index,
                name=header.name,
                base=header.base,
                platform=header.platform,
                instructions=instructions,
                text=text,
                depends_on=tuple(needs.stages),
                external_images=tuple(needs.images),
                copy_sources=tuple(needs.copy_sources),
                cache_mounts=tuple(needs.cache_mounts),
                mount_sources=tuple(needs.mount_sources),
                from_line=header.line,
                parent=parent,
            )
        )

    def _base_scope(self, header: StageHeader, needs: _Needs) -> Scope:
        base = header.base.lower()
        for stage in self.stages:
            if stage.name == base:
                needs.stage(stage.ref)
                return self.scopes[stage.index].child()
        if base == SCRATCH:
            return Scope()
        needs.image(header.base)
        return Scope(open=True)

    def _read(self, instruction: Instruction, index: int, scope: Scope, needs: _Needs) -> None:
        if instruction.keyword == "ARG":
            for name, raw in arg_declarations(instruction, self.escape):
                self._declare_arg(scope, name, raw)
        elif instruction.keyword == "ENV":
            values = [
                (name, expand_or_unknown(raw, scope.lookup, self.escape))
                for name, raw in env_assignments(instruction, self.escape)
            ]
            # Every value of one ENV sees the variables as they were before it.
            scope.env.update(values)
        elif instruction.keyword in ("COPY", "ADD"):
            self._read_copy(instruction, index, scope, needs)
        elif instruction.keyword == "RUN":
            for option in instruction.flag_values("mount"):
                self._read_mount(option, instruction.line, index, scope, needs)

    def _declare_arg(self, scope: Scope, name: str, raw: str | None) -> None:
        if name in self.build_args:
            scope.args[name] = self.build_args[name]
        elif raw is not None:
            scope.args[name] = expand_or_unknown(raw, scope.lookup, self.escape)
        elif name in self.global_scope.args:
            scope.args[name] = self.global_scope.args[name]
        # Else the ARG is declared without a value: Docker leaves it unset.

    def _read_copy(self, instruction: Instruction, index: int, scope: Scope, needs: _Needs) -> None:
        words = json_list(instruction.arguments)
        if words is None:
            words = instruction.arguments.split()
        if len(words) < 2:
            raise ValueError(f"{instruction.keyword} needs a source and a destination")
        origin = instruction.flag("from")
        if origin is not None:
            self._need(origin, index, scope, needs)
            return
        for word in words[:-1]:
            heredoc = HEREDOC.fullmatch(word)
            if heredoc and heredoc.group(3):
                continue
            if instruction.keyword == "ADD" and _REMOTE_SOURCE.match(word):
                continue
            needs.copy_sources.append(self._context_path(word, scope))

    def _read_mount(self, option: str, line: int, index: int, scope: Scope, needs: _Needs) -> None:
        fields = _mount_fields(option)
        kind = fields.get("type", "bind").lower()
        origin = fields.get("from")
        if origin:
            self._need(origin, index, scope, needs)
        elif kind == "bind":
            # A bind mount without from= reads the build context, as a COPY would.
            source = fields.get("source") or fields.get("src") or "."
            needs.mount_sources.append(self._context_path(source, scope))
        if kind == "cache":
            expanded = {
                key: expand_or_keep(text, scope.lookup, self.escape) for key, text in fields.items()
            }
            needs.cache_mounts.append(_cache_mount(expanded, line))

    def _context_path(self, word: str, scope: Scope) -> str:
        # A path naming a variable only the build knows could be anything: take it all.
        return expand_or_unknown(word, scope.lookup, self.escape) or "."

    def _need(self, reference: str, index: int, scope: Scope, needs: _Needs) -> None:
        """Record a --from=REFERENCE: a stage (by name or index) or an image."""
        value = expand_or_keep(reference, scope.lookup, self.escape)
        if value.isdigit():
            if int(value) >= index:
                raise ValueError(
                    f"--from={value} names stage {value}, not one before this stage ({index})"
                )
            needs.stage(self.stages[int(value)].ref)
            return
        name = value.lower()
        for stage in self.stages:
            if stage.name == name:
                needs.stage(stage.ref)
                return
        for later in self.headers[index:]:
            if later.name == name:
                raise ValueError(
                    f"--from={value} names stage {name!r} of line {later.line}, "
                    "not one before this one: move that stage up"
                )
        if name != SCRATCH:
            needs.image(value)


@dataclasses.dataclass
class _Needs:
    """What one stage needs; stages and images each once, in the order first named."""

    stages: list[str] = dataclasses.field(default_factory=list)
    images: list[str] = dataclasses.field(default_factory=list)
    copy_sources: list[str] = dataclasses.field(default_factory=list)
    mount_sources: list[str] = dataclasses.field(default_factory=list)
    cache_mounts: list[CacheMount] = dataclasses.field(default_factory=list)

    def stage(self, ref: str) -> None:
        if ref not in self.stages:
            self.stages.append(ref)

    def image(self, reference: str) -> None:
        if reference not in self.images:
            self.images.append(reference)


def _mount_fields(option: str) -> dict[str, str]:
    """``type=cache,target=/x,ro`` as a dict, keys lower-cased; CSV quoting as BuildKit reads it."""
    fields: dict[str, str] = {}
    for field in next(csv.reader([option]), []):
        key, _, value = field.partition("=")
        fields[key.strip().lower()] = value
    return fields


def _cache_mount(fields: Mapping[str, str], line: int) -> CacheMount:
    target = fields.get("target") or fields.get("dst") or fields.get("destination")
    if not target:
        raise Malformed(line, "a cache mount needs a target: --mount=type=cache,target=PATH")
    sharing = fields.get("sharing", "shared").lower()
    if sharing not in CACHE_SHARING:
        raise Malformed(line, f"cache mount sharing={sharing!r}: use {', '.join(CACHE_SHARING)}")
    mode = fields.get("mode")
    if mode is not None and not re.fullmatch(r"[0-7]+", mode):
        raise Malformed(line, f"cache mount mode={mode!r} is not an octal mode like 0755")
    return CacheMount(
        id=fields.get("id") or target,
        target=target,
        sharing=sharing,
        uid=_mount_number(fields, "uid", line),
        gid=_mount_number(fields, "gid", line),
        mode=mode,
        from_stage=fields.get("from") or None,
        source=fields.get("source") or fields.get("src") or None,
    )


def _mount_number(fields: Mapping[str, str], key: str, line: int) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    if not value.isdigit():
        raise Malformed(line, f"cache mount {key}={value!r} is not a number")
    return int(value)
