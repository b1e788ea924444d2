# Sourced by the actions' main steps: inputs arrive as environment variables and
# become CLI arguments in the array `args`; nothing here expands them as code.

args=()

# Each non-empty line of $2, trimmed, as `$1 LINE` (or as a bare argument when $1 is "").
add_lines() {
  local flag="$1" line
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line%"${line##*[![:space:]]}"}"
    [[ -z "$line" ]] && continue
    if [[ -n "$flag" ]]; then args+=("$flag" "$line"); else args+=("$line"); fi
  done <<<"$2"
}

# `$1 $2` when $2 is not empty.
add_option() {
  if [[ -n "$2" ]]; then args+=("$1" "$2"); fi
}

# `$1` when $2 is true; an input that is neither true nor false stops the step.
add_switch() {
  case "$2" in
    true) args+=("$1") ;;
    false | "") ;;
    *) echo "::error::$1 takes true or false, not '$2'" >&2; exit 2 ;;
  esac
}

# The store: the action's input, else $CI_INTEGRATION_STORE (the CLI reads it), else
# the GitHub cache when the job has its service (v2 on github.com, v1 on GitHub
# Enterprise Server and act), else the CLI's local default.
add_store() {
  local service_url="${ACTIONS_CACHE_URL:-}" v2="${ACTIONS_CACHE_SERVICE_V2:-}"
  if [[ "${v2,,}" =~ ^[[:space:]]*(true|1)[[:space:]]*$ ]]; then
    service_url="${ACTIONS_RESULTS_URL:-}"
  fi
  if [[ -n "${INPUT_STORE:-}" ]]; then
    args+=(--store "$INPUT_STORE")
  elif [[ -n "${CI_INTEGRATION_STORE:-}" ]]; then
    :
  elif [[ -n "$service_url" && -n "${ACTIONS_RUNTIME_TOKEN:-}" ]]; then
    args+=(--store gha://)
  elif [[ "${CI_INTEGRATION_CACHE_SERVICE:-}" == v[12] ]]; then
    # export-cache-env handed the service over in a file the CLI reads.
    args+=(--store gha://)
  else
    echo "::notice::no GitHub cache service in this job: caching in a local folder, which only a self-hosted runner keeps (set the store input)"
  fi
}
