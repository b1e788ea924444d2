"""The janitor's decisions as a pure function: labels and facts in, a verdict out."""

from __future__ import annotations

import datetime

import pytest

from ci_integration.containers import labels as names
from ci_integration.containers.cleanup import Facts, Policy, decide, duration
from ci_integration.containers.owner import Host, Owner
from ci_integration.context import CIContext, Provider

POLICY = Policy(max_age=86400, grace=60)
HOUR = 3600.0


def labels_of(provider=Provider.JENKINS, keep=False, **fields) -> dict[str, str]:
    job = CIContext(
        provider,
        job_name="app/main",
        build_id="41",
        build_url="https://ci.example.com/job/app/job/main/41/",
        **fields,
    )
    owner = Owner(Host("agent-1", "pid:[4026531836]"), 4242, 123456)
    started = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc)
    return names.container_labels(job, owner, started, keep=keep)


def test_never_touches_a_container_without_the_tool_label():
    verdict = decide({"maintainer": "someone"}, Facts(age=10 * 86400, owner_running=False), POLICY)
    assert not verdict.remove


def test_a_label_with_another_value_is_not_ours():
    labels = {**labels_of(), names.TOOL: "something-else"}
    assert not decide(labels, Facts(age=10 * 86400, owner_running=False), POLICY).remove


def test_running_owner_keeps_it_whatever_its_age_or_ci():
    facts = Facts(age=30 * 86400, owner_running=True, build_running=False)
    verdict = decide(labels_of(), facts, POLICY)
    assert not verdict.remove and "pid 4242" in verdict.reason and "running" in verdict.reason


def test_gone_owner_removes_it_after_the_grace_period():
    assert decide(labels_of(), Facts(age=61, owner_running=False), POLICY).remove
    within = decide(labels_of(), Facts(age=59, owner_running=False), POLICY)
    assert not within.remove and "grace" in within.reason


def test_gone_owner_wins_over_a_ci_that_says_the_build_runs():
    # The build may go on, but nothing is left to remove this container when it ends.
    facts = Facts(age=HOUR, owner_running=False, build_running=True)
    assert decide(labels_of(), facts, POLICY).remove


@pytest.mark.parametrize(
    "provider,ci", [(Provider.JENKINS, "Jenkins"), (Provider.GITHUB_ACTIONS, "GitHub")]
)
def test_the_ci_decides_when_the_owner_cannot_be_seen(provider, ci):
    over = decide(labels_of(provider), Facts(age=HOUR, build_running=False), POLICY)
    running = decide(labels_of(provider), Facts(age=3 * 86400, build_running=True), POLICY)
    assert over.remove and over.reason == f"{ci} says app/main #41 is over"
    assert not running.remove and running.reason == f"{ci} says app/main #41 is running"


def test_unknown_everything_falls_back_to_the_age_rule():
    young = decide(labels_of(), Facts(age=HOUR), POLICY)
    old = decide(labels_of(), Facts(age=86400 + 1), POLICY)
    assert not young.remove and young.reason.endswith("1h old")
    assert old.remove and old.reason.endswith("older than 1d")


def test_no_max_age_keeps_what_nothing_can_judge():
    assert not decide(labels_of(), Facts(age=365 * 86400), Policy(None, 60)).remove


def test_kept_containers_go_only_by_age():
    kept = labels_of(keep=True)
    assert not decide(
        kept, Facts(age=HOUR, owner_running=False, build_running=False), POLICY
    ).remove
    assert decide(kept, Facts(age=2 * 86400, owner_running=True), POLICY).remove


def test_local_jobs_have_no_ci_to_ask():
    labels = labels_of(Provider.LOCAL)
    assert not decide(labels, Facts(age=HOUR), POLICY).remove
    assert decide(labels, Facts(age=2 * 86400), POLICY).remove


@pytest.mark.parametrize(
    "seconds,text",
    [(0, "0s"), (59.9, "59s"), (60, "1m"), (7200, "2h"), (3 * 86400 + 5, "3d"), (-3, "0s")],
)
def test_duration(seconds, text):
    assert duration(seconds) == text
