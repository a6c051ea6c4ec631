#!/usr/bin/env bash
# description: Filesystems over the usage threshold
# warning-exit: 3
# tags: storage, capacity
# timeout: 30s
# workload: io
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"

readonly WARN_PCT="${DISK_WARN_PCT:-90}"
readonly FAIL_PCT="${DISK_FAIL_PCT:-98}"

main() {
  local failed=0 fs avail pct mount
  while read -r fs _ _ avail pct mount; do
    pct="${pct%\%}"
    [[ "${pct}" =~ ^[0-9]+$ ]] || continue
    if (( pct >= FAIL_PCT )); then
      log::error "${mount} (${fs}) is ${pct}% full, ${avail}K left"
      failed=1
    elif (( pct >= WARN_PCT )); then
      log::warn "${mount} (${fs}) is ${pct}% full"
    else
      log::debug "${mount} ${pct}%"
    fi
  done < <(df -P -x tmpfs -x devtmpfs -x overlay -x squashfs 2>/dev/null | tail -n +2 || true)
  log::info "disk usage checked (warn ${WARN_PCT}%, fail ${FAIL_PCT}%)"
  return "${failed}"
}

main "$@"
log::status
