#!/usr/bin/env bash
# description: TLS certificates that expire soon
# warning-exit: 3
# wants: osinfo
# tags: security, tls
# timeout: 1m
# workload: cpu
set -euo pipefail
# shellcheck source=../lib/log.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/log.sh"
# shellcheck source=../lib/require.sh
source "${CORRAL_LIB:-$(dirname "$0")/../lib}/require.sh"

readonly WARN_DAYS="${CERT_WARN_DAYS:-30}"

main() {
  if ! require::cmd openssl 2>/dev/null; then
    log::info "openssl is not installed: nothing to check"
    return 0
  fi
  local -a certs=()
  local pattern path
  for pattern in ${CERT_PATHS:-/etc/ssl/certs/ssl-cert-snakeoil.pem /etc/letsencrypt/live/*/cert.pem /etc/pki/tls/certs/localhost.crt}; do
    for path in ${pattern}; do
      [[ -r "${path}" ]] && certs+=("${path}")
    done
  done
  local soon=0
  for path in "${certs[@]}"; do
    if ! openssl x509 -checkend $(( WARN_DAYS * 86400 )) -noout -in "${path}" >/dev/null; then
      log::warn "${path} expires within ${WARN_DAYS} days ($(openssl x509 -enddate -noout -in "${path}"))"
      soon=$(( soon + 1 ))
    fi
  done
  log::info "${#certs[@]} certificates checked, ${soon} expire within ${WARN_DAYS} days"
}

main "$@"
log::status
