#!/usr/bin/env bash
# PromoStream's one test command: installs what is missing, runs the xunit suite (unit, end-to-end and
# reliability tests, which start real processes), then a short benchmark, and ends with
# "N passed, N failed[, N skipped]".
#
# Real brokers, in this order: a PROMOSTREAM_TEST_BOOTSTRAP the user exported wins (nothing is started);
# where `docker info` answers, the compose stack (docker-compose.yml) is brought up; otherwise, where
# ../shared/kafka/kfake exists (a Kafka-protocol broker in one process, see its README), it is started for the
# run and stopped on exit; elsewhere the real-broker checks are reported as skipped, with the reason.
# PROMOSTREAM_TEST_BROKER says which one the tests face: user, compose or kfake.
set -uo pipefail
cd "$(dirname "$0")"
root=$(pwd)
passed=0 failed=0 skipped=0
work=$(mktemp -d -t promostream-test-XXXXXX)
compose_up=0
kfake_pid=
stop_kfake() {
  if [ -n "$kfake_pid" ] && kill "$kfake_pid" 2>/dev/null; then
    # SIGTERM stops kfake at once; should it not, SIGKILL after 5 s. Nothing is left behind.
    for _ in $(seq 50); do kill -0 "$kfake_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$kfake_pid" 2>/dev/null
  fi
  [ -n "$kfake_pid" ] && wait "$kfake_pid" 2>/dev/null
  kfake_pid=
}
cleanup() {
  stop_kfake
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
# Debian's prometheus scrapes the metrics endpoint in one test; where it cannot be installed, that test is skipped
# and says so.
if ! command -v prometheus >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "prometheus missing; installing the Debian package prometheus (for the scrape test)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >"$work/apt-prometheus.log" 2>&1 \
    || echo "could not install prometheus (see below); the scrape test will be skipped"; tail -n 3 "$work/apt-prometheus.log" | grep -i "^E:" || true
fi
echo "Prometheus: $(command -v prometheus || echo 'not installed: the scrape test is skipped')"
command -v dotnet >/dev/null || { echo "dotnet SDK not found"; echo "0 passed, 1 failed"; exit 1; }

step "real brokers"
kfake="$root/../shared/kafka/kfake"
# Starts kfake in the background and waits (up to 20 s) for its first stdout line,
# "bootstrap 127.0.0.1:P,127.0.0.1:P,..."; sets kfake_pid and kfake_bootstrap. Returns non-zero on failure.
start_kfake() {
  local bin="$kfake" line= deadline=$((SECONDS + 20))
  if [ ! -x "$bin" ]; then
    # CI copies shared/ without write bits, and a copy may lack the exec bit too: run a copy of our own.
    cp "$kfake" "$work/kfake" && chmod +x "$work/kfake" || return 1
    bin="$work/kfake"
  fi
  : >"$work/kfake.out"
  "$bin" -ports 0,0,0 -partitions 4 -log-level warn >"$work/kfake.out" 2>"$work/kfake.log" &
  kfake_pid=$!
  # read succeeds only on a complete line; poll until it does, kfake exits, or 20 s pass.
  until IFS= read -r line <"$work/kfake.out"; do
    if ! kill -0 "$kfake_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then line=; break; fi
    sleep 0.1
  done
  if [[ "$line" =~ ^bootstrap\ (127\.0\.0\.1:[0-9]+(,127\.0\.0\.1:[0-9]+)*)$ ]]; then
    kfake_bootstrap=${BASH_REMATCH[1]}
    return 0
  fi
  echo "kfake exited or gave no bootstrap line within 20 s (stdout: '$(head -c 200 "$work/kfake.out")'); its log:"
  tail -n 20 "$work/kfake.log"
  stop_kfake
  return 1
}
if [ -n "${PROMOSTREAM_TEST_BOOTSTRAP:-}" ]; then
  export PROMOSTREAM_TEST_BROKER=user
  unset PROMOSTREAM_REAL_BROKER_SKIP
  echo "real-broker checks use the broker you exported: PROMOSTREAM_TEST_BOOTSTRAP=$PROMOSTREAM_TEST_BOOTSTRAP"
# Compose v2 (`docker compose`) is needed for `up --wait`; with only v1 the kfake path is taken instead.
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  if docker compose up -d --wait >"$work/compose.log" 2>&1; then
    compose_up=1
    export PROMOSTREAM_TEST_BOOTSTRAP="localhost:9092" PROMOSTREAM_TEST_BROKER=compose
    echo "real-broker checks use the compose stack: Apache Kafka and PostgreSQL 16 ($PROMOSTREAM_TEST_BOOTSTRAP)"
  else
    fail "docker compose up (see below)"; tail -n 20 "$work/compose.log"
    export PROMOSTREAM_REAL_BROKER_SKIP="docker compose up failed"
  fi
elif [ -f "$kfake" ]; then
  if start_kfake; then
    export PROMOSTREAM_TEST_BOOTSTRAP="$kfake_bootstrap" PROMOSTREAM_TEST_BROKER=kfake
    echo "real-broker checks use kfake (../shared/kafka/kfake, pid $kfake_pid, 3 brokers): $PROMOSTREAM_TEST_BOOTSTRAP"
  else
    fail "start kfake"
    export PROMOSTREAM_REAL_BROKER_SKIP="../shared/kafka/kfake did not start"
  fi
else
  export PROMOSTREAM_REAL_BROKER_SKIP="no Docker engine answers 'docker info' and ../shared/kafka/kfake is missing; real-broker checks need one of them"
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
# A failed test's message and the top of its stack, so that a red run says why (the filter above shows only the name).
awk '/^[ \t]+Failed [A-Za-z]/ { n = 14 } n > 0 && !/^[ \t]*$/ { print "  | " $0; n-- }' "$work/test.log" | cut -c1-400 || true
if grep -qE '^Total tests: [0-9]+|(Passed|Failed)!\s+-' "$work/test.log"; then
  passed=$((passed + $(count Passed))); failed=$((failed + $(count Failed))); skipped=$((skipped + $(count Skipped)))
  # Every skipped test is a real-broker check; the reason is why this machine cannot run it.
  # (The reason is appended by the shell, not sed: it may contain '/'.)
  grep -E '^\s+Skipped ' "$work/test.log" | sed -E 's/^\s+Skipped /SKIP /; s/ \[.*\]$//' \
    | while IFS= read -r t; do
        case "$t" in
          *Prometheus*) echo "$t: the prometheus binary is missing (apt-get install -y prometheus)" ;;
          *) echo "$t: ${PROMOSTREAM_REAL_BROKER_SKIP:-skipped}" ;;
        esac
      done || true
else
  fail "dotnet test produced no summary (see above)"; tail -n 40 "$work/test.log"
fi
if [ -n "$kfake_pid" ] && ! kill -0 "$kfake_pid" 2>/dev/null; then
  fail "kfake exited during the tests; its log:"; tail -n 20 "$work/kfake.log"
fi

step "README: the second command of a fresh machine, dotnet run -- --demo, as printed"
if dotnet run -c Release --no-build -- --demo >"$work/demo.out" 2>"$work/demo.err" && grep -q '^demo: ok$' "$work/demo.out"; then
  pass "--demo: $(grep -E '^\s+postgres|^\s+kafka' "$work/demo.out" | tr -s ' ' | tr '\n' ';')"
else
  tail -n 20 "$work/demo.out" "$work/demo.err"; fail "--demo did not print 'demo: ok' and exit 0"
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
