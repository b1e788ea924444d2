"""Dockerfile text to its instructions, each with its line and --flags, as BuildKit reads
it: parser directives, escape-character continuations, comments inside continuations,
heredoc bodies skipped. What the instructions mean is for the modules above this one.
"""

from __future__ import annotations

import json
import re

from ci_integration.images.dockerfile.model import Instruction

INSTRUCTIONS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)
HEREDOC = re.compile(r"(\d*)<<(-?)([^<]*)")

_HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVES = ("syntax", "escape", "check")
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*")
_INSTRUCTION_SPLIT = re.compile(r"[\t\v\f\r ]+")


class Malformed(Exception):
    """A problem in the Dockerfile; parse() turns it into a UsageError with the line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def physical_lines(text: str) -> list[str]:
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_directives(lines: list[str]) -> dict[str, str]:
    """``# name=value`` lines at the very top; the first other line ends them."""
    directives: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        match = _DIRECTIVE.fullmatch(line.lstrip())
        if not match or match.group(1).lower() not in _DIRECTIVES:
            break
        name, value = match.group(1).lower(), match.group(2)
        if name in directives:
            raise Malformed(number, f"only one {name} parser directive can be used")
        if name == "escape" and value not in ("\\", "`"):
            raise Malformed(number, f"invalid escape character {value!r}: use \\ or `")
        directives[name] = value
    return directives


def read_instructions(lines: list[str], escape: str) -> list[Instruction]:
    e = re.escape(escape)
    continuation = re.compile(rf"([^{e}]){e}[ \t]*\Z|\A{e}[ \t]*\Z")
    instructions = []
    index = 0
    while index < len(lines):
        start = index + 1
        first = lines[index].lstrip()
        index += 1
        if first.startswith("#"):
            continue
        logical, ended = _trim_continuation(first, continuation)
        if ended and not logical:
            continue
        while not ended and index < len(lines):
            line = lines[index]
            index += 1
            # Comment and blank lines inside a continuation are dropped, not ending it.
            if line.lstrip().startswith("#") or not line.strip():
                continue
            part, ended = _trim_continuation(line, continuation)
            logical += part
        instruction = _instruction(logical, start)
        for terminator, chomp in _heredocs(instruction, logical):
            index = _skip_heredoc_body(lines, index, terminator, chomp, start)
        instructions.append(instruction)
    return instructions


def _trim_continuation(line: str, continuation: re.Pattern[str]) -> tuple[str, bool]:
    """The line without its trailing escape character, and whether the instruction ends."""
    if continuation.search(line):
        return continuation.sub(r"\1", line), False
    return line, True


def _instruction(logical: str, line: int) -> Instruction:
    parts = _INSTRUCTION_SPLIT.split(logical.strip(), maxsplit=1)
    keyword = parts[0].upper()
    if keyword not in INSTRUCTIONS:
        raise Malformed(line, f"unknown instruction {parts[0]!r}")
    flags, arguments = _split_flags(parts[1] if len(parts) > 1 else "")
    return Instruction(keyword, arguments.strip(), flags, line)


def _split_flags(text: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """Leading ``--name[=value]`` words, and the rest of the text; ``--`` ends the flags."""
    flags: list[tuple[str, str]] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if not text.startswith("--", position):
            return tuple(flags), text[position:]
        word, position = _read_flag_word(text, position)
        if word == "--":
            return tuple(flags), text[position:]
        name, _, value = word[2:].partition("=")
        flags.append((name, value))


def _read_flag_word(text: str, position: int) -> tuple[str, int]:
    """One flag word with its quotes removed and backslash escapes applied, and where it ends."""
    chars = []
    quote = ""
    while position < len(text):
        char = text[position]
        if not quote and char.isspace():
            break
        position += 1
        if quote and char == quote:
            quote = ""
            continue
        if not quote and char in "'\"":
            quote = char
            continue
        if char == "\\":
            if position == len(text):
                break
            char = text[position]
            position += 1
        chars.append(char)
    return "".join(chars), position


def _heredocs(instruction: Instruction, logical: str) -> list[tuple[str, bool]]:
    """The terminators of the heredocs the instruction opens, with their <<- flag."""
    keyword, arguments = instruction.keyword, instruction.arguments
    if keyword == "ONBUILD":
        inner = arguments.split(None, 1)
        keyword = inner[0].upper() if inner else ""
        arguments = _split_flags(inner[1])[1] if len(inner) > 1 else ""
    if keyword not in _HEREDOC_INSTRUCTIONS or json_list(arguments) is not None:
        return []
    found = []
    for word in raw_words(logical, "\\"):
        match = HEREDOC.fullmatch(word)
        if match and match.group(3):
            found.append((_unquote_heredoc_name(match.group(3)), match.group(2) == "-"))
    return found


def _unquote_heredoc_name(word: str) -> str:
    return re.sub(r"[\"'\\]", "", word)


def _skip_heredoc_body(
    lines: list[str], index: int, terminator: str, chomp: bool, start: int
) -> int:
    """The index of the line after the heredoc's terminator."""
    while index < len(lines):
        line = lines[index].lstrip("\t") if chomp else lines[index]
        index += 1
        if line == terminator:
            return index
    raise Malformed(start, f"unterminated heredoc: add a line holding only {terminator}")


def raw_words(text: str, escape: str) -> list[str]:
    """Words split on unquoted whitespace, their quotes and escapes kept as written."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if not quote and char.isspace():
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(char)
        if char == escape and quote != "'" and index < len(text):
            current.append(text[index])
            index += 1
        elif quote and char == quote:
            quote = ""
        elif not quote and char in "'\"":
            quote = char
    if current:
        words.append("".join(current))
    return words


def json_list(arguments: str) -> list[str] | None:
    """The arguments in JSON form (``["a", "b"]``), or None when they are in shell form."""
    if not arguments.startswith("["):
        return None
    try:
        value = json.loads(arguments)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None
