#!/usr/bin/env bash
# The first step of every action: install ci-integration from this checkout into a
# private virtual environment (once per job, kept by version and source digest), and
# stage actions/export-cache-env where a composite step can `uses:` it.
#
#   setup.sh ROOT_RELATIVE_TO_THE_ACTION [store]
#
# Outputs (GITHUB_OUTPUT): cli, lib, export-cache-env (true when the action's store
# is the GitHub cache). Reads INPUT_STORE, INPUT_REGISTRY, CI_INTEGRATION_STORE,
# CI_INTEGRATION_PYTHON, CI_INTEGRATION_VENV_DIR; never an input expanded into code.
set -euo pipefail

root="$(cd "$GITHUB_ACTION_PATH/$1" && pwd)"
python="${CI_INTEGRATION_PYTHON:-python3}"
version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/ci_integration/__init__.py")"
# A checkout of a branch keeps its version number while its code changes.
digest="$(cd "$root" && find setup.cfg pyproject.toml ci_integration -type f \
  \( -name '*.py' -o -name '*.cfg' -o -name '*.toml' \) -print0 | LC_ALL=C sort -z \
  | xargs -0 sha256sum | sha256sum | cut -c1-12)"
# The store the action names, if any: it says which client to install (boto3 for
# S3), and whether to stage export-cache-env, which the CLI needs to find the GitHub
# cache when no store is named. Which store is used is the CLI's choice.
# An action given a registry keeps its layers there and uses no store.
uses_store=false
store=""
if [[ "${2:-}" == store && -z "${INPUT_REGISTRY:-}" ]]; then
  uses_store=true
  store="${INPUT_STORE:-${CI_INTEGRATION_STORE:-}}"
fi
extras=""
[[ "$store" == s3://* ]] && extras="s3"
venvs="${CI_INTEGRATION_VENV_DIR:-${RUNNER_TEMP:-/tmp}/ci-integration}"
venv="$venvs/$version-$digest${extras:+-$extras}"
mkdir -p "$venvs"

install() {
  [[ -f "$venv/.complete" ]] && return 0
  echo "::group::ci-integration $version: installing into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$root${extras:+[$extras]}"
  touch "$venv/.complete"
  echo "::endgroup::"
}

# Jobs of one self-hosted machine may share the folder: one installs, the others wait.
if command -v flock >/dev/null; then
  exec 9>"$venv.lock"
  flock -w 600 9
fi
install
echo "ci-integration $("$venv/bin/ci-integration" --version | cut -d' ' -f2) from $root"

export_env=false
if [[ "$uses_store" == true && ( -z "$store" || "$store" == gha://* ) ]]; then
  # A composite step can only `uses:` an action under the workspace; the copy is
  # removed right after it ran, before anything reads the workspace.
  staged="$GITHUB_WORKSPACE/.ci-integration-export-cache-env"
  if [[ -e "$staged" && ! -e "$staged/.staged-by-ci-integration" ]]; then
    echo "::warning::$staged exists and is not ours: the GitHub cache's variables are not exported"
  else
    rm -rf "$staged"
    cp -R "$root/actions/export-cache-env" "$staged"
    touch "$staged/.staged-by-ci-integration"
    export_env=true
  fi
fi

{
  echo "cli=$venv/bin/ci-integration"
  echo "lib=$root/actions/lib"
  echo "export-cache-env=$export_env"
} >>"$GITHUB_OUTPUT"
