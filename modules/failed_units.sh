#!/usr/bin/env bash
# description: systemd units in the failed state
# warning-exit: 3
# requires: osinfo
# tags: services
# timeout: 30s
# retries: 1
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"
# shellcheck source=../lib/require.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/require.sh"

main() {
  if [[ ! -d /run/systemd/system ]] || ! require::cmd systemctl 2>/dev/null; then
    log::info "not a systemd host: nothing to check"
    return 0
  fi
  local units
  units="$(systemctl list-units --state=failed --no-legend --plain 2>/dev/null | awk '{print $1}')"
  if [[ -n "${units}" ]]; then
    log::warn "failed units: $(echo "${units}" | tr '\n' ' ')"
  else
    log::info "no failed units"
  fi
}

main "$@"
log::status
