#!/usr/bin/env bash
# End-to-end benchmark: Switchboard (release, one Worker) against str0m's `examples/chat.rs`,
# driven by switchboard-loadgen, interleaved run by run. One command reproduces BENCHMARKS.md:
#
#   scripts/bench/e2e.sh                      # 3 rounds
#   ROUNDS=1 scripts/bench/e2e.sh             # quicker
#   PROFILE=1 scripts/bench/e2e.sh            # also `perf record` Switchboard at its knee
#
# Scenarios, each measured on both SFUs in every round (the order alternates per round):
#   one-to-many  1 publisher (30 fps VP8 ≈ 120 packets/s + Opus 50/s), subscribers ramped in steps
#                of RAMP_STEP until > 1 % loss or > 1 % of packets over 500 ms late: the knee.
#   group        4 publishers (everyone receives everyone else) plus subscribers ramped in steps of
#                GROUP_STEP, same rule.
# The figure compared is received packets per CPU-second of the SFU process at its knee
# (utime+stime from /proc); the ratio is taken per round (Switchboard / chat), then its median
# and range over rounds.
#
# Everything runs inside a fresh network namespace with only `lo` (unshare -n); the SFU under test
# is pinned to CPU 0 and the load generator to CPU 1 (taskset). Results (JSON per run, the summary,
# the profile) go to target/bench-e2e/<UTC time>/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"

ROUNDS="${ROUNDS:-3}"
RAMP_START="${RAMP_START:-50}"; RAMP_STEP="${RAMP_STEP:-50}"; RAMP_MAX="${RAMP_MAX:-1500}"
GROUP_START="${GROUP_START:-10}"; GROUP_STEP="${GROUP_STEP:-10}"; GROUP_MAX="${GROUP_MAX:-400}"
SETTLE="${SETTLE:-3}"; WINDOW="${WINDOW:-5}"; GROUP_SETTLE="${GROUP_SETTLE:-5}"
PROFILE="${PROFILE:-0}"

if [ -z "${SWITCHBOARD_BENCH_NS:-}" ]; then
  echo "== building release binaries" >&2
  cargo build --release -p switchboard-gateway -p switchboard-loadgen >&2
  chat_bin="$("$repo/scripts/bench/build-chat.sh")"
  out="$repo/target/bench-e2e/$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$out"
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
    echo "kernel: $(uname -r)"
    lscpu | grep -E '^(Model name|CPU\(s\)|Hypervisor vendor)'
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  } > "$out/machine.txt"
  export SWITCHBOARD_BENCH_NS=1 CHAT_BIN="$chat_bin" OUT="$out"
  exec unshare -n -- bash -c 'ip link set lo up && exec "$0"' "$0"
fi

# One UDP socket per load-generator Peer.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
gateway="$repo/target/release/switchboard"
loadgen="$repo/target/release/switchboard-loadgen"

wait_port() { # host port
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $2 never opened" >&2; return 1
}

start_sfu() { # system -> sets SFU_PID
  case "$1" in
    switchboard)
      SWITCHBOARD__MEDIA__WORKERS=1 SWITCHBOARD__GRPC__LISTEN=127.0.0.1:50051 \
      SWITCHBOARD__TURN__ENABLED=false SWITCHBOARD__DEMO__ENABLED=false \
      SWITCHBOARD__LOG__FILTER=warn \
        taskset -c 0 "$gateway" > "$OUT/$run.sfu.log" 2>&1 &
      SFU_PID=$!; wait_port 127.0.0.1 50051 ;;
    chat)
      RUST_LOG=warn taskset -c 0 "$CHAT_BIN" > "$OUT/$run.sfu.log" 2>&1 &
      SFU_PID=$!; wait_port 127.0.0.1 3000 ;;
  esac
}

stop_sfu() {
  kill "$SFU_PID" 2>/dev/null || true
  wait "$SFU_PID" 2>/dev/null || true
}

run_one() { # round system scenario
  local round=$1 system=$2 scenario=$3
  run="r$round-$system-$scenario"
  local args
  case "$scenario" in
    one-to-many) args=(--publishers 1 --subscribers "$RAMP_START" --ramp "$RAMP_STEP" --ramp-max "$RAMP_MAX"
                       --settle "$SETTLE" --duration "$WINDOW") ;;
    group) args=(--publishers 4 --subscribers "$GROUP_START" --ramp "$GROUP_STEP" --ramp-max "$GROUP_MAX"
                 --settle "$GROUP_SETTLE" --duration "$WINDOW") ;;
  esac
  [ "$system" = chat ] && args+=(--target chat)
  echo "== round $round: $system, $scenario" >&2
  start_sfu "$system"
  if ! taskset -c 1 "$loadgen" "${args[@]}" --json --gateway-pid "$SFU_PID" \
      > "$OUT/$run.json" 2> "$OUT/$run.log"; then
    echo "   load generator failed, see $OUT/$run.log" >&2
  fi
  tail -n 3 "$OUT/$run.log" >&2 || true
  if [ "$PROFILE" = 1 ] && [ "$system" = switchboard ] && [ "$scenario" = one-to-many ] && [ "$round" = 1 ]; then
    profile_at_knee
  fi
  stop_sfu
}

profile_at_knee() { # a fresh gateway, loaded at the knee just measured, profiled for 10 s
  stop_sfu
  local knee
  knee=$(jq -r '.knee.subscribers // empty' "$OUT/$run.json")
  [ -n "$knee" ] || return 0
  run="profile-switchboard"
  start_sfu switchboard
  taskset -c 1 "$loadgen" --publishers 1 --subscribers "$knee" --settle 3 --duration 14 --quiet \
    --gateway-pid "$SFU_PID" > "$OUT/profile.loadgen.txt" 2>&1 &
  local lg=$!
  sleep $((knee / 25 + 5))
  perf record -e cpu-clock -g -p "$SFU_PID" -o "$OUT/perf.data" -- sleep 10 > /dev/null 2>&1 || true
  wait "$lg" || true
  perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
    | python3 "$repo/scripts/bench/profile-summary.py" > "$OUT/profile.txt" || true
  perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -15 > "$OUT/profile-dso.txt" || true
  echo "   profile at $knee subscribers: $OUT/profile.txt" >&2
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="switchboard chat"; else order="chat switchboard"; fi
  for scenario in one-to-many group; do
    for system in $order; do
      run_one "$round" "$system" "$scenario"
    done
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

python3 "$repo/scripts/bench/summarize.py" "$OUT" | tee "$OUT/summary.md"
