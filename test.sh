#!/usr/bin/env bash
# PromoStream's one test command: installs what is missing, runs the xunit suite (unit, end-to-end and
# reliability tests, which start real processes), then a short benchmark, and ends with
# "N passed, N failed[, N skipped]".
#
# Real brokers: where `docker info` answers, the compose stack (docker-compose.yml) is brought up and the
# real-broker checks run against it; elsewhere they are reported as skipped, with the reason.
set -uo pipefail
cd "$(dirname "$0")"
root=$(pwd)
passed=0 failed=0 skipped=0
work=$(mktemp -d -t promostream-test-XXXXXX)
compose_up=0
cleanup() {
  [ "$compose_up" = 1 ] && docker compose down -v >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }
pass() { passed=$((passed + 1)); echo "PASS $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }

postgres_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

step "prerequisites"
if [ -z "$(postgres_bin)" ] || [ ! -x "$(postgres_bin)/initdb" ]; then
  if command -v initdb >/dev/null 2>&1; then
    echo "initdb on PATH: $(command -v initdb)"
  elif [ "$(id -u)" = 0 ]; then
    echo "PostgreSQL server binaries missing; installing the Debian package postgresql"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
      || { fail "apt-get install postgresql"; echo "0 passed, 1 failed"; exit 1; }
  else
    echo "PostgreSQL server binaries missing: run  sudo apt-get install -y postgresql"
    echo "0 passed, 1 failed"; exit 1
  fi
fi
echo "PostgreSQL binaries: $(postgres_bin || command -v initdb)"
command -v dotnet >/dev/null || { echo "dotnet SDK not found"; echo "0 passed, 1 failed"; exit 1; }

step "real brokers"
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  if docker compose up -d --wait >"$work/compose.log" 2>&1; then
    compose_up=1
    export PROMOSTREAM_TEST_BOOTSTRAP="localhost:9092"
    echo "compose stack up: the real-broker checks run against Apache Kafka and PostgreSQL 16"
  else
    fail "docker compose up (see below)"; tail -n 20 "$work/compose.log"
    export PROMOSTREAM_REAL_BROKER_SKIP="docker compose up failed"
  fi
else
  export PROMOSTREAM_REAL_BROKER_SKIP="no Docker engine answers 'docker info'; real-broker checks need the compose stack"
  echo "skipping real-broker checks: $PROMOSTREAM_REAL_BROKER_SKIP"
fi

step "build"
if ! dotnet build tests/PromoStream.Tests -c Release -nologo -v q >"$work/build.log" 2>&1; then
  cat "$work/build.log"; fail "build"; echo "$passed passed, $failed failed"; exit 1
fi
echo "built"

step "xunit: unit, end-to-end and reliability tests"
# A test that hangs is stopped after 8 minutes and reported, instead of running into CI's time limit.
dotnet test tests/PromoStream.Tests -c Release --no-build -nologo --blame-hang-timeout 8m --blame-hang-dump-type none \
  --logger "console;verbosity=detailed" --logger "trx;LogFileName=$work/results.trx" 2>&1 | tee "$work/test.log" \
  | grep -E '^\s+(Failed|Skipped) |^\s*(Error Message)|^ ?figure:|Passed!|Failed!' | sed 's/^ figure:/figure:/' | awk '!seen[$0]++' || true
# dotnet test ends with "Total tests: N" then "Passed: N", "Failed: N", "Skipped: N" lines (detailed verbosity)
# or with one "Passed!  - Failed: N, Passed: N, Skipped: N" line (other verbosities); read either.
count() {
  local n
  n=$(grep -A4 -E '^Total tests: [0-9]+' "$work/test.log" | grep -E "^\s+$1: [0-9]+\s*$" | tail -n 1 | grep -oE '[0-9]+')
  [ -n "$n" ] || n=$(grep -E '(Passed|Failed)!\s+-' "$work/test.log" | tail -n 1 | sed -nE "s/.*$1:\s+([0-9]+).*/\1/p")
  echo "${n:-0}"
}
if grep -qE '^Total tests: [0-9]+|(Passed|Failed)!\s+-' "$work/test.log"; then
  passed=$((passed + $(count Passed))); failed=$((failed + $(count Failed))); skipped=$((skipped + $(count Skipped)))
  # Every skipped test is a real-broker check; the reason is why this machine cannot run it.
  grep -E '^\s+Skipped ' "$work/test.log" | sed "s/^ */SKIP /; s/ \[.*\]\$//; s/\$/: ${PROMOSTREAM_REAL_BROKER_SKIP:-skipped}/" || true
else
  fail "dotnet test produced no summary (see above)"; tail -n 40 "$work/test.log"
fi

step "benchmark smoke: a small --bench proves the command works and prints its last line"
if dotnet run -c Release --no-build -- --bench --events 4000 --restaurants 200 --subscriptions 2000 \
     --latency-seconds 3 --partitions 8 --rounds 1 >"$work/bench.out" 2>"$work/bench.err"; then
  last=$(tail -n 1 "$work/bench.out")
  if [[ "$last" =~ ^bench:\ events_per_s=[0-9]+\ rows_per_s=[0-9]+\ p99_ms=[0-9]+\ peak_rss_mb=[0-9]+\ ratio=[0-9.]+\ eos_overhead_pct=-?[0-9]+$ ]]; then
    pass "bench smoke: $last"
  else
    fail "bench smoke: last line not in the documented form: $last"
  fi
else
  tail -n 20 "$work/bench.err"; fail "bench smoke: exited non-zero"
fi

echo
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
