from __future__ import annotations

import re

from ci_integration.context.model import SCOPE_MAX_LENGTH, CIContext, Provider, sanitize_scope

TAG_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def test_plain_names_are_kept():
    assert sanitize_scope("branch-main") == "branch-main"
    assert sanitize_scope("tag-v1.2.3") == "tag-v1.2.3"


def test_changed_names_never_collide():
    names = ["branch-feature/x", "branch-feature-x", "branch-feature x", "branch-feature//x"]
    scopes = {sanitize_scope(name) for name in names}
    assert len(scopes) == len(names)
    assert all(TAG_SAFE.match(scope) for scope in scopes)


def test_long_and_hostile_names_are_bounded_and_safe():
    for name in ["branch-" + "a" * 300, "branch-../../etc", "branch-$(rm -rf /)", "branch-é"]:
        scope = sanitize_scope(name)
        assert len(scope) <= SCOPE_MAX_LENGTH
        assert TAG_SAFE.match(scope), scope
        assert ".." not in scope


def test_a_branch_cannot_take_the_default_branch_scope():
    default = CIContext(Provider.LOCAL, branch="main").scope
    for lookalike in ["main/", "main ", "/main", "main\n"]:
        assert CIContext(Provider.LOCAL, branch=lookalike).scope != default


def test_pull_request_scope_differs_from_its_branch():
    pr = CIContext(Provider.JENKINS, branch="main", is_pull_request=True, pr_number=3)
    assert pr.scope == "pr-3" and pr.scope_chain == ["pr-3"]
    unnumbered = CIContext(Provider.JENKINS, branch="main", is_pull_request=True)
    assert unnumbered.scope != CIContext(Provider.JENKINS, branch="main").scope
