"""The parsed Dockerfile as plain data: its instructions, its stages and what each needs,
and looking up a stage and the stages a build of it needs. dockerfile.parse() makes these.
"""

from __future__ import annotations

import dataclasses

from ci_integration.errors import UsageError

CACHE_SHARING = ("shared", "private", "locked")


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-cased: FROM, RUN, COPY...
    arguments: str  # after the keyword and its --flags, continuations joined, no heredoc body
    flags: tuple[tuple[str, str], ...]  # ("from", "builder"), ("link", "")... in order
    line: int  # 1-based line where the instruction starts

    def flag(self, name: str) -> str | None:
        values = self.flag_values(name)
        return values[0] if values else None

    def flag_values(self, name: str) -> list[str]:
        return [value for flag, value in self.flags if flag == name]


@dataclasses.dataclass(frozen=True)
class CacheMount:
    id: str  # BuildKit's default is the target path
    target: str
    sharing: str = "shared"
    uid: int | None = None
    gid: int | None = None
    mode: str | None = None
    from_stage: str | None = None
    source: str | None = None


@dataclasses.dataclass(frozen=True)
class Stage:
    index: int
    name: str | None  # lower-cased, as Docker does
    base: str  # after ARG substitution; may name an earlier stage
    platform: str | None
    instructions: tuple[Instruction, ...]
    text: str  # the FROM line up to the line before the next FROM
    # What the stage needs; parse() fills these, since resolving a name needs the other stages.
    depends_on: tuple[str, ...] = ()
    external_images: tuple[str, ...] = ()
    copy_sources: tuple[str, ...] = ()
    cache_mounts: tuple[CacheMount, ...] = ()
    mount_sources: tuple[str, ...] = ()  # context paths RUN --mount=type=bind reads (no from=)
    from_line: int = 0  # 1-based line of the FROM instruction
    parent: str | None = None  # the earlier stage FROM names, if it names one

    @property
    def ref(self) -> str:
        return self.name if self.name is not None else str(self.index)


@dataclasses.dataclass(frozen=True)
class Dockerfile:
    stages: tuple[Stage, ...]
    global_args: dict[str, str | None]  # ARGs before the first FROM: their defaults
    syntax: str | None
    escape: str = "\\"

    def stage(self, ref: str) -> Stage:
        """The stage by name (any case) or by index."""
        wanted = str(ref).strip().lower()
        if wanted.isdigit() and int(wanted) < len(self.stages):
            return self.stages[int(wanted)]
        for stage in self.stages:
            if stage.name == wanted:
                return stage
        known = ", ".join(stage.ref for stage in self.stages)
        raise UsageError(f"unknown stage {ref!r}: the Dockerfile has stages {known}")

    def stages_for(self, target: str | None = None) -> list[Stage]:
        """The target (default: the last stage) and all it needs, dependencies first."""
        final = self.stage(target) if target is not None else self.stages[-1]
        needed = {final.index}
        pending = [final]
        while pending:
            for ref in pending.pop().depends_on:
                dependency = self.stage(ref)
                if dependency.index not in needed:
                    needed.add(dependency.index)
                    pending.append(dependency)
        # A stage only ever depends on earlier ones, so index order is a build order.
        return [self.stages[index] for index in sorted(needed)]

    def lineage(self, ref: str) -> list[str]:
        """The stages ``ref`` is built FROM, its parent first: their layers are its own."""
        chain = []
        parent = self.stage(ref).parent
        while parent is not None:
            chain.append(parent)
            parent = self.stage(parent).parent
        return chain
