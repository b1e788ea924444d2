"""Every YAML example in the README and the actions' READMEs is what GitHub accepts:
YAML its parser reads (a plain scalar holding ': ' is not), and, put in a workflow as
a user pastes it, a workflow that GitHub's schema accepts."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.wrappers import ROOT
from tests.wrappers.test_actions import check_jsonschema

DOCUMENTS = [ROOT / "README.md", *sorted(ROOT.glob("actions/**/README.md"))]
EXAMPLES = [
    (document, index, block)
    for document in DOCUMENTS
    for index, block in enumerate(
        re.findall(r"^```ya?ml\n(.*?)^```", document.read_text(), re.MULTILINE | re.DOTALL)
    )
]


def as_workflow(block: str) -> str:
    """A whole workflow as it is, a job's steps inside one job, a job inside jobs."""
    example = yaml.safe_load(block)
    if isinstance(example, list):
        example = {"runs-on": "ubuntu-24.04", "steps": example}
    assert isinstance(example, dict), example
    if "jobs" in example:
        # Written back as is: YAML 1.1 reads a workflow's `on:` as the key true.
        return block if True in example or "on" in example else "on: push\n" + block
    if "steps" in example:
        example = {"build": example}
    return yaml.safe_dump({"on": "push", "jobs": example}, sort_keys=False)


def test_the_documents_have_examples():
    assert {document.parent.name for document, _, _ in EXAMPLES} >= {
        "build", "cache", "cleanup", "context", "export-cache-env", "run",
    }  # fmt: skip


@pytest.mark.parametrize(("document", "index", "block"), EXAMPLES,
                         ids=[f"{d.relative_to(ROOT)}#{i}" for d, i, _ in EXAMPLES])  # fmt: skip
def test_an_example_is_a_workflow_github_accepts(document, index, block, tmp_path):
    workflow = tmp_path / "example.yml"
    workflow.write_text(as_workflow(block))
    result = check_jsonschema("vendor.github-workflows", [workflow])
    assert result.returncode == 0, f"{document}, example {index}:\n{result.stdout}{result.stderr}"
