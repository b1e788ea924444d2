"""docs/architecture.md draws the package as it is: every module its table names
exists, and every module of the package is in the table (itself, or a folder the
table gives one job)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ci_integration"
DOCUMENT = ROOT / "docs" / "architecture.md"


def named_paths() -> list[str]:
    """The backticked paths of the first column of the module table."""
    text = DOCUMENT.read_text()
    table = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    paths = []
    for row in re.findall(r"^\| (.+?) \|", table, re.MULTILINE):
        paths += [p for p in re.findall(r"`([^`]+)`", row) if "/" in p or p.endswith(".py")]
    return paths


def where(path: str) -> list[Path]:
    """What a named path stands for: a file or folder of the package, else of the
    repository; ``<name>`` and ``*`` as wildcards."""
    pattern = path.replace("<name>", "*")
    for base in (PACKAGE, ROOT):
        found = sorted(base.glob(pattern))
        if found:
            return found
    return []


def test_every_module_the_document_names_exists():
    missing = [path for path in named_paths() if not where(path)]
    assert not missing, f"docs/architecture.md names what is not there: {missing}"


def test_every_module_of_the_package_is_in_the_document():
    covered: set[Path] = set()
    for path in named_paths():
        for found in where(path):
            covered |= {found, *found.rglob("*.py")} if found.is_dir() else {found}
    modules = {p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    # A package's __init__ with no code of its own (its docstring says what the
    # package is) is no module of its own.
    modules = {p for p in modules if p.name != "__init__.py" or re.search(
        r"^(def|class) ", p.read_text(), re.MULTILINE)}  # fmt: skip
    left_out = sorted(str(p.relative_to(PACKAGE)) for p in modules - covered)
    assert not left_out, f"docs/architecture.md does not say what these do: {left_out}"
