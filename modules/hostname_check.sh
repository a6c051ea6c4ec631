#!/usr/bin/env bash
### BEGIN INIT INFO
# Provides:          hostname_check hostinfo
# Required-Start:    $local_fs osinfo
# Should-Start:      $network $time
# Default-Start:     2 3 4 5
# Default-Stop:
# Short-Description: Hostname resolves and matches /etc/hostname
# Description:       An example of a module written with an LSB init-script
#                    header, as Debian's /etc/init.d scripts carry.
### END INIT INFO
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"

main() {
  local name configured=""
  name="$(uname -n)"
  [[ -r /etc/hostname ]] && configured="$(tr -d '[:space:]' < /etc/hostname)"
  if [[ -n "${configured}" && "${configured}" != "${name}" ]]; then
    log::warn "running hostname ${name} differs from /etc/hostname (${configured})"
  fi
  if getent hosts "${name}" >/dev/null 2>&1; then
    log::info "${name} resolves to $(getent hosts "${name}" | awk '{print $1; exit}')"
  else
    log::warn "${name} does not resolve"
  fi
}

main "$@"
log::status
