#!/usr/bin/env bash
# description: One line per check: how many warnings each logged in this run
# requires: disk_usage, memory, load_average
# wants: inode_usage failed_units listening_ports pending_updates
# wants: time_sync cert_expiry hostinfo
# tags: report
# detach: no
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"

main() {
  local log name warnings total=0
  if [[ -z "${CORRAL_LOG_DIR:-}" || ! -d "${CORRAL_LOG_DIR}" ]]; then
    log::info "not run by corral: no logs to summarise"
    return 0
  fi
  for log in "${CORRAL_LOG_DIR}"/*.log; do
    [[ -e "${log}" ]] || continue
    name="$(basename "${log}" .log)"
    [[ "${name}" == "${CORRAL_MODULE:-summary}" ]] && continue
    warnings="$(grep -c '^WARN ' "${log}" || true)"
    total=$(( total + warnings ))
    printf '%-20s %s warning(s)\n' "${name}" "${warnings}"
  done
  log::info "${total} warning(s) in all"
}

main "$@"
