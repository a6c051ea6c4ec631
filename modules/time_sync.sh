#!/usr/bin/env bash
# description: Is the clock synchronised (systemd-timesyncd, chrony or ntpd)?
# warning-exit: 3
# before: cert_expiry
# tags: time
# timeout: 15s
# retries: 2
# workload: network
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"
# shellcheck source=../lib/retry.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/retry.sh"

synced() {
  if command -v timedatectl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    [[ "$(timedatectl show -p NTPSynchronized --value 2>/dev/null)" == "yes" ]]
  elif command -v chronyc >/dev/null 2>&1; then
    chronyc -n tracking 2>/dev/null | grep -q 'Leap status *: Normal'
  else
    return 2
  fi
}

main() {
  local status=0
  RETRY_BASE_DELAY=1 retry::with_backoff 2 synced 2>/dev/null || status=$?
  case "${status}" in
    0) log::info "clock is synchronised" ;;
    2) log::info "no time-sync daemon to ask; clock is $(date -u +%FT%TZ)" ;;
    *) log::warn "clock is not synchronised" ;;
  esac
}

main "$@"
log::status
