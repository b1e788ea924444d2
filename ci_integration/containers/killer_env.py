"""The variables CI systems find a job's processes by, copied into its containers.

A container's processes are children of the Docker daemon, not of the job, so the
only way a CI's process-tree killer finds them is by their environment. Jenkins
reads /proc/PID/environ and kills every process where all the variables of a set
match (hudson.util.ProcessTree.killAll):

- a Pipeline ``sh`` step: JENKINS_SERVER_COOKIE (durable-task);
- the end of a ``node {}`` block: JENKINS_NODE_COOKIE;
- a freestyle build: its characteristic variables, all together
  (JENKINS_SERVER_COOKIE, HUDSON_SERVER_COOKIE, JOB_NAME, JOB_BASE_NAME,
  BUILD_NUMBER, BUILD_ID, BUILD_TAG).

The GitHub Actions runner kills orphans by RUNNER_TRACKING_ID when a job ends;
GITHUB_RUN_ID names the run (the janitor asks GitHub about it).
"""

from __future__ import annotations

from collections.abc import Mapping

JENKINS_KILLER_VARIABLES = (
    "JENKINS_SERVER_COOKIE",
    "JENKINS_NODE_COOKIE",
    "HUDSON_SERVER_COOKIE",
    "JOB_NAME",
    "JOB_BASE_NAME",
    "BUILD_NUMBER",
    "BUILD_ID",
    "BUILD_TAG",
)
GITHUB_KILLER_VARIABLES = ("RUNNER_TRACKING_ID", "GITHUB_RUN_ID")
KILLER_VARIABLES = JENKINS_KILLER_VARIABLES + GITHUB_KILLER_VARIABLES


def killer_env(env: Mapping[str, str]) -> dict[str, str]:
    """The killer variables of the caller's environment, exactly as they are there:
    a killer compares values, so even an empty one must be copied unchanged."""
    return {name: env[name] for name in KILLER_VARIABLES if name in env}


def container_env(requested: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """The container's environment: what the user asked for, then the killer
    variables, which win so that the job's killer always recognises the processes."""
    return {**requested, **killer_env(env)}
