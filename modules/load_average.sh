#!/usr/bin/env bash
# description: Load average against the number of CPUs
# warning-exit: 3
# tags: capacity
# timeout: 10s
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"

main() {
  local one five fifteen runnable _rest cpus
  read -r one five fifteen runnable _rest < /proc/loadavg
  cpus="$(nproc)"
  log::info "load ${one} ${five} ${fifteen} on ${cpus} CPUs (${runnable} runnable/total)"
  # Compare in hundredths: bash has no floating point.
  local five_x100="${five/./}"
  if (( 10#${five_x100} > cpus * 200 )); then
    log::warn "5-minute load ${five} is over twice the CPU count"
  fi
}

main "$@"
log::status
