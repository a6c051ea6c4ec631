#!/usr/bin/env bash
# description: Filesystems running out of inodes
# warning-exit: 3
# after: disk_usage
# tags: storage, capacity
# timeout: 30s
# workload: io
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"

main() {
  local fs free pct mount worst=0
  while read -r fs _ _ free pct mount; do
    pct="${pct%\%}"
    [[ "${pct}" =~ ^[0-9]+$ ]] || continue
    (( pct > worst )) && worst="${pct}"
    if (( pct >= ${INODE_WARN_PCT:-90} )); then
      log::warn "${mount} (${fs}) uses ${pct}% of its inodes (${free} free)"
    fi
  done < <(df -P -i -x tmpfs -x devtmpfs -x overlay -x squashfs 2>/dev/null | tail -n +2 || true)
  log::info "highest inode use: ${worst}%"
}

main "$@"
log::status
