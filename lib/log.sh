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

# How many warnings this module logged (shown or not): see log::status.
LOG_WARNINGS=0

log::debug() { log::_emit debug "$@"; }
log::info() { log::_emit info "$@"; }
log::warn() { LOG_WARNINGS=$(( LOG_WARNINGS + 1 )); log::_emit warn "$@"; }
log::error() { log::_emit error "$@"; }

#######################################
# The module's exit status as an audit check: a warning, or all clear.
# A module that declares `# warning-exit: 3` ends with `log::status`, and corral
# shows it as a warning (run exit status 5) instead of a failure.
# Arguments: none
# Returns: 3 when log::warn was called in this shell, else 0.
#######################################
log::status() {
  (( LOG_WARNINGS == 0 )) || return 3
}

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
