#!/usr/bin/env bash
# description: TCP ports listening on addresses other than loopback
# tags: network, security
# timeout: 20s
# workload: io
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"

# Reads /proc/net/tcp{,6} directly so the check works without ss or netstat.
main() {
  local file sl local_addr _remote state _rest addr port count=0
  for file in /proc/net/tcp /proc/net/tcp6; do
    [[ -r "${file}" ]] || continue
    while read -r sl local_addr _remote state _rest; do
      [[ "${sl}" == "sl" || "${state}" != "0A" ]] && continue
      addr="${local_addr%:*}"
      port=$(( 16#${local_addr##*:} ))
      case "${addr}" in
        0100007F|00000000000000000000000001000000) continue ;;
      esac
      log::info "listening on port ${port} (${file##*/})"
      count=$(( count + 1 ))
    done < "${file}"
  done
  log::info "${count} non-loopback listening sockets"
}

main "$@"
