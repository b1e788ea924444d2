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

# The action's store input, when set. Without it the CLI picks the store
# (`ci-integration context --default-store`): $CI_INTEGRATION_STORE, else the GitHub
# cache when export-cache-env handed its service over, else a local folder.
add_store() {
  add_option --store "${INPUT_STORE:-}"
}
