#!/usr/bin/env bash
# Checks that a module's tools and files exist before it does any work.
# Sourced, never executed: no `set` lines here.

#######################################
# Succeed when every named command is on PATH.
# Arguments: command names...
# Outputs: one line on stderr per missing command.
# Returns: 0 when all exist, 1 otherwise.
#######################################
require::cmd() {
  local cmd missing=0
  for cmd in "$@"; do
    if ! command -v "${cmd}" >/dev/null 2>&1; then
      printf 'missing command: %s\n' "${cmd}" >&2
      missing=1
    fi
  done
  return "${missing}"
}

#######################################
# Succeed when at least one of the named commands is on PATH.
# Arguments: command names...
# Outputs: the first one found, on stdout.
# Returns: 0 when one exists, 1 otherwise.
#######################################
require::any_cmd() {
  local cmd
  for cmd in "$@"; do
    if command -v "${cmd}" >/dev/null 2>&1; then
      printf '%s\n' "${cmd}"
      return 0
    fi
  done
  return 1
}
