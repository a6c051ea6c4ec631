#!/usr/bin/env bash
# Retry a command with exponential backoff.
# Sourced, never executed: no `set` lines here.

#######################################
# Run a command until it succeeds, sleeping 1, 2, 4 ... seconds between tries.
# Arguments: attempts (>= 1), command and its arguments...
# Outputs: whatever the command prints; a line on stderr before each retry.
# Returns: 0 on success, else the last attempt's status.
#######################################
retry::with_backoff() {
  local attempts="${1}"
  shift
  local try=1 delay="${RETRY_BASE_DELAY:-1}" status=0
  while true; do
    "$@" && return 0
    status=$?
    if (( try >= attempts )); then
      return "${status}"
    fi
    printf 'attempt %d/%d failed (status %d); retrying in %ss\n' \
      "${try}" "${attempts}" "${status}" "${delay}" >&2
    sleep "${delay}"
    delay=$(( delay * 2 ))
    try=$(( try + 1 ))
  done
}
