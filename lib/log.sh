#!/usr/bin/env bash
# Logging with levels for corral modules.
# Sourced, never executed: no `set` lines here, the module's own settings apply.
# The level comes from CORRAL_LOG_LEVEL (debug, info, warn, error; default info).

#######################################
# Numeric rank of a level name.
# Arguments: level name
# Outputs: the rank on stdout (0 debug .. 3 error); unknown names rank as info.
#######################################
log::_rank() {
  case "${1}" in
    debug) echo 0 ;;
    warn) echo 2 ;;
    error) echo 3 ;;
    *) echo 1 ;;
  esac
}

#######################################
# Print one log line if its level is enabled.
# Arguments: level, message words...
# Outputs: "LEVEL message" to stderr (corral prefixes module name and time).
# Returns: 0
#######################################
log::_emit() {
  local level="${1}"
  shift
  local wanted
  wanted="$(log::_rank "${CORRAL_LOG_LEVEL:-info}")"
  if (( $(log::_rank "${level}") >= wanted )); then
    printf '%-5s %s\n' "${level^^}" "$*" >&2
  fi
  return 0
}

log::debug() { log::_emit debug "$@"; }
log::info() { log::_emit info "$@"; }
log::warn() { log::_emit warn "$@"; }
log::error() { log::_emit error "$@"; }

#######################################
# Print an error and exit the module.
# Arguments: exit status, message words...
# Returns: never; exits with the given status.
#######################################
log::die() {
  local status="${1}"
  shift
  log::error "$@"
  exit "${status}"
}
