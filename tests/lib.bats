#!/usr/bin/env bats
# Tests for the Bash libraries in lib/.

bats_require_minimum_version 1.5.0  # `run -N` checks exit statuses

setup() {
  LIB="${BATS_TEST_DIRNAME}/../lib"
  # shellcheck source=../lib/log.sh
  source "${LIB}/log.sh"
  # shellcheck source=../lib/require.sh
  source "${LIB}/require.sh"
  # shellcheck source=../lib/retry.sh
  source "${LIB}/retry.sh"
}

@test "log::info prints to stderr with its level" {
  run --separate-stderr log::info "hello world"
  [ "$status" -eq 0 ]
  [ "$output" = "" ]
  [ "$stderr" = "INFO  hello world" ]
}

@test "log::debug is silent unless CORRAL_LOG_LEVEL=debug" {
  run --separate-stderr log::debug "hidden"
  [ "$stderr" = "" ]
  CORRAL_LOG_LEVEL=debug run --separate-stderr log::debug "shown"
  [ "$stderr" = "DEBUG shown" ]
}

@test "CORRAL_LOG_LEVEL=error hides warnings" {
  CORRAL_LOG_LEVEL=error run --separate-stderr log::warn "quiet"
  [ "$stderr" = "" ]
}

@test "log::die exits with the given status" {
  run bash -c "source '${LIB}/log.sh'; log::die 7 boom; echo unreachable"
  [ "$status" -eq 7 ]
  [[ "$output" == *"ERROR boom"* ]]
  [[ "$output" != *unreachable* ]]
}

@test "require::cmd succeeds for present commands and names the missing ones" {
  run require::cmd bash true
  [ "$status" -eq 0 ]
  run --separate-stderr require::cmd bash no-such-cmd-xyz other-missing-xyz
  [ "$status" -eq 1 ]
  [[ "$stderr" == *"missing command: no-such-cmd-xyz"* ]]
  [[ "$stderr" == *"missing command: other-missing-xyz"* ]]
}

@test "require::any_cmd prints the first one found" {
  run require::any_cmd no-such-cmd-xyz bash sh
  [ "$status" -eq 0 ]
  [ "$output" = "bash" ]
  run require::any_cmd no-such-cmd-xyz
  [ "$status" -eq 1 ]
}

@test "retry::with_backoff retries until success" {
  counter="${BATS_TEST_TMPDIR}/count"
  echo 0 > "${counter}"
  flaky() { local n; n=$(( $(cat "${counter}") + 1 )); echo "${n}" > "${counter}"; (( n >= 3 )); }
  RETRY_BASE_DELAY=0 run retry::with_backoff 5 flaky
  [ "$status" -eq 0 ]
  [ "$(cat "${counter}")" -eq 3 ]
}

@test "retry::with_backoff returns the last status after the last attempt" {
  RETRY_BASE_DELAY=0 run retry::with_backoff 2 bash -c 'exit 4'
  [ "$status" -eq 4 ]
  [[ "$output" == *"attempt 1/2 failed (status 4)"* ]]
}

@test "log::status returns 3 after a warning, 0 otherwise" {
  run -0 log::status
  log::warn "disk nearly full" 2>/dev/null
  run -3 log::status
}
