"""GitHub's own validator, @actions/languageservice (what the GitHub Actions extension
of VS Code runs), finds nothing to say about any action.yml of the project or any
workflow example of its READMEs: no schema error, no unknown context, and every
input of a step that uses one of these actions is one the action has.

There is no network here to fetch other repositories' action.yml (actions/checkout):
that one diagnostic, and only for actions of other repositories, is not counted."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.wrappers import ROOT
from tests.wrappers.test_doc_examples import EXAMPLES, as_workflow

VALIDATOR = Path(__file__).with_name("languageservice") / "validate.mjs"
MODULES = ROOT / ".venv" / "npm-languageservice" / "node_modules"
UNREACHABLE = re.compile(r"Unable to resolve action `(?!OWNER/ci-integration/)[^`]+`")


def diagnostics(files: list[Path]) -> dict[str, list[dict]]:
    if not (MODULES / "@actions" / "languageservice").is_dir():
        message = "@actions/languageservice is not installed: ./dev setup"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        ["node", str(VALIDATOR), *map(str, files)],
        env={**os.environ, "LANGUAGESERVICE_MODULES": str(MODULES), "ACTIONS_ROOT": str(ROOT)},
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    found = json.loads(done.stdout)
    return {path: [d for d in found[path] if not UNREACHABLE.search(d["message"])]
            for path in found}  # fmt: skip


def test_every_action_and_example_has_no_diagnostic(tmp_path):
    files = sorted(ROOT.glob("actions/**/action.yml"))
    assert len(files) == 7
    for document, index, block in EXAMPLES:
        name = f"{document.relative_to(ROOT)}#{index}".replace("/", "_")
        files.append(tmp_path / ".github" / "workflows" / f"{name}.yml")
        files[-1].parent.mkdir(parents=True, exist_ok=True)
        files[-1].write_text(as_workflow(block))
    found = diagnostics(files)
    assert {path: seen for path, seen in found.items() if seen} == {}


def test_the_validator_does_find_what_github_refuses(tmp_path):
    """The same run on workflows with a wrong input and a missing required one, and
    with a compact mapping: what GitHub refuses is reported here too."""
    job = "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n"
    inputs, mapping = tmp_path / "inputs.yml", tmp_path / "mapping.yml"
    inputs.write_text(job + "      - uses: OWNER/ci-integration/actions/cache/restore@v1\n"
                      "        with:\n          paths: data\n          key: k\n")  # fmt: skip
    mapping.write_text(job + "      - run: echo a: b\n")
    found = diagnostics([inputs, mapping])
    assert {d["message"] for d in found[str(inputs)]} == {
        "Invalid action input 'paths'", "Missing required input `path`"}  # fmt: skip
    assert (
        "Nested mappings are not allowed in compact mappings" in found[str(mapping)][0]["message"]
    )
