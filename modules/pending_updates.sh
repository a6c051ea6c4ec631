#!/usr/bin/env bash
# description: Package updates waiting to be installed (simulated, changes nothing)
# warning-exit: 3
# requires: osinfo
# locks: pkgdb
# tags: packages, security
# timeout: 2m
# retries: 1
# workload: network
# memory: 256M
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"
# shellcheck source=../lib/require.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/require.sh"

main() {
  local tool count
  if ! tool="$(require::any_cmd apt-get dnf zypper)"; then
    log::info "no known package manager: nothing to check"
    return 0
  fi
  case "${tool}" in
    apt-get)
      count="$(apt-get -s -o Debug::NoLocking=1 upgrade 2>/dev/null | grep -c '^Inst ' || true)" ;;
    dnf)
      count="$(dnf -q --cacheonly check-update 2>/dev/null | grep -c '\.' || true)" ;;
    zypper)
      count="$(zypper --non-interactive list-updates 2>/dev/null | grep -c '^v ' || true)" ;;
  esac
  if (( count > 0 )); then
    log::warn "${count} package updates pending (${tool}, from the local package lists)"
  else
    log::info "no pending updates in the local package lists (${tool})"
  fi
}

main "$@"
log::status
