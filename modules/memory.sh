#!/usr/bin/env bash
# description: Memory and swap headroom
# warning-exit: 3
# tags: capacity
# memory: 16M
# timeout: 10s
# workload: cpu
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"

main() {
  local key value total=0 avail=0 swap_total=0 swap_free=0
  while read -r key value _; do
    case "${key}" in
      MemTotal:) total="${value}" ;;
      MemAvailable:) avail="${value}" ;;
      SwapTotal:) swap_total="${value}" ;;
      SwapFree:) swap_free="${value}" ;;
    esac
  done < /proc/meminfo
  local pct=$(( total > 0 ? avail * 100 / total : 0 ))
  log::info "memory available: $(( avail / 1024 )) MiB of $(( total / 1024 )) MiB (${pct}%)"
  if (( pct < ${MEM_WARN_PCT:-10} )); then
    log::warn "less than ${MEM_WARN_PCT:-10}% of memory is available"
  fi
  if (( swap_total > 0 )); then
    log::info "swap used: $(( (swap_total - swap_free) / 1024 )) MiB of $(( swap_total / 1024 )) MiB"
  fi
}

main "$@"
log::status
