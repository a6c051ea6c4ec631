#!/usr/bin/env bash
# description: Identify the distribution, kernel and init system
# provides: osinfo
# tags: inventory
# timeout: 10s
# workload: io
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"

main() {
  local name="unknown" version=""
  if [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    name="$(. /etc/os-release && echo "${PRETTY_NAME:-${NAME:-unknown}}")"
  fi
  version="$(uname -r)"
  local init="other"
  [[ -d /run/systemd/system ]] && init="systemd"
  log::info "os: ${name}"
  log::info "kernel: ${version} ($(uname -m))"
  log::info "init: ${init}"
}

main "$@"
