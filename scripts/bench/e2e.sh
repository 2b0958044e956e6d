#!/usr/bin/env bash
# End-to-end benchmark: Switchboard (release, one Worker) against str0m's `examples/chat.rs`,
# driven by switchboard-loadgen, interleaved run by run. One command reproduces BENCHMARKS.md:
#
#   scripts/bench/e2e.sh                      # 3 rounds
#   ROUNDS=1 scripts/bench/e2e.sh             # quicker
#   PROFILE=1 scripts/bench/e2e.sh            # also `perf record` Switchboard at its knee
#   SYSTEMS=switchboard SCENARIOS="one-to-many idle" ROUNDS=2 scripts/bench/e2e.sh   # a subset
#
# Scenarios (SCENARIOS, default all three), each measured on both SFUs (SYSTEMS) in every round
# (the order alternates per round):
#   one-to-many  1 publisher (30 fps VP8 ≈ 120 packets/s + Opus 50/s), subscribers ramped in steps
#                of RAMP_STEP until > 1 % loss or > 1 % of packets over 500 ms late: the knee.
#                RAMP_PAST overloaded steps are measured past it (delay p99, audio delivery).
#   group        4 publishers (everyone receives everyone else) plus subscribers ramped in steps of
#                GROUP_STEP, same rule.
#   idle         Switchboard only: subscribers of a Room where nobody publishes, ramped in steps of
#                IDLE_STEP: the SFU's RSS growth per idle Session.
# The figure compared is received packets per CPU-second of the SFU process at its knee
# (utime+stime from /proc); the ratio is taken per round (Switchboard / chat), then its median
# and range over rounds. The summary also gives the one-way delay p50/p99 (audio, video) and
# audio delivery at the first step past the knee, and the SFU's RSS growth per added Session
# (median over the steps below the knee) for each scenario.
#
# Two Workers against one: scripts/bench/workers.sh.
#
# Everything runs inside a fresh network namespace with only `lo` (unshare -n); the SFU under test
# is pinned to CPU 0 and the load generator to CPU 1 (taskset). Results (JSON per run, the summary,
# the profile) go to target/bench-e2e/<UTC time>/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
. "$repo/scripts/bench/lib.sh"

ROUNDS="${ROUNDS:-3}"
RAMP_START="${RAMP_START:-50}"; RAMP_STEP="${RAMP_STEP:-50}"; RAMP_MAX="${RAMP_MAX:-1500}"
GROUP_START="${GROUP_START:-10}"; GROUP_STEP="${GROUP_STEP:-10}"; GROUP_MAX="${GROUP_MAX:-400}"
IDLE_START="${IDLE_START:-100}"; IDLE_STEP="${IDLE_STEP:-100}"; IDLE_MAX="${IDLE_MAX:-500}"
SETTLE="${SETTLE:-3}"; WINDOW="${WINDOW:-5}"; GROUP_SETTLE="${GROUP_SETTLE:-5}"
RAMP_PAST="${RAMP_PAST:-2}"
PROFILE="${PROFILE:-0}"
SYSTEMS="${SYSTEMS:-switchboard chat}"
SCENARIOS="${SCENARIOS:-one-to-many group idle}"

if [ -z "${SWITCHBOARD_BENCH_NS:-}" ]; then
  echo "== building release binaries" >&2
  cargo build --release -p switchboard-gateway -p switchboard-loadgen >&2
  chat_bin=""
  case " $SYSTEMS " in *" chat "*) chat_bin="$("$repo/scripts/bench/build-chat.sh")" ;; esac
  out="$repo/target/bench-e2e/$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$out"
  machine_info "$out/machine.txt"
  export CHAT_BIN="$chat_bin" OUT="$out"
fi
enter_namespace "$0"

start_sfu() { # system -> sets SFU_PID
  case "$1" in
    switchboard) start_switchboard 1 0 "$OUT/$run.sfu.log" ;;
    chat)
      RUST_LOG=warn taskset -c 0 "$CHAT_BIN" > "$OUT/$run.sfu.log" 2>&1 &
      SFU_PID=$!; wait_port 127.0.0.1 3000 ;;
  esac
}

run_one() { # round system scenario
  local round=$1 system=$2 scenario=$3
  run="r$round-$system-$scenario"
  local args
  case "$scenario" in
    one-to-many) args=(--publishers 1 --subscribers "$RAMP_START" --ramp "$RAMP_STEP" --ramp-max "$RAMP_MAX"
                       --ramp-past "$RAMP_PAST" --settle "$SETTLE" --duration "$WINDOW") ;;
    group) args=(--publishers 4 --subscribers "$GROUP_START" --ramp "$GROUP_STEP" --ramp-max "$GROUP_MAX"
                 --ramp-past "$RAMP_PAST" --settle "$GROUP_SETTLE" --duration "$WINDOW") ;;
    idle) args=(--publishers 0 --subscribers "$IDLE_START" --ramp "$IDLE_STEP" --ramp-max "$IDLE_MAX"
                --settle "$SETTLE" --duration 2) ;;
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
  # The load generator runs well past the 10 s profile and is stopped after it: a profile that
  # outlasts its Peers records the gateway sending into closed ports (ICMP in the kernel share).
  local warmup=$((knee / 25 + 5))
  taskset -c 1 "$loadgen" --publishers 1 --subscribers "$knee" --settle 3 \
    --duration $((warmup + 30)) --quiet \
    --gateway-pid "$SFU_PID" > "$OUT/profile.loadgen.txt" 2>&1 &
  local lg=$!
  sleep "$warmup"
  perf record -e cpu-clock -g -p "$SFU_PID" -o "$OUT/perf.data" -- sleep 10 > /dev/null 2>&1 || true
  kill "$lg" 2>/dev/null || true
  wait "$lg" || true
  perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
    | python3 "$repo/scripts/bench/profile-summary.py" > "$OUT/profile.txt" || true
  perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -15 > "$OUT/profile-dso.txt" || true
  echo "   profile at $knee subscribers: $OUT/profile.txt" >&2
}

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="switchboard chat"; else order="chat switchboard"; fi
  for scenario in $SCENARIOS; do
    for system in $order; do
      case " $SYSTEMS " in *" $system "*) ;; *) continue ;; esac
      [ "$scenario" = idle ] && [ "$system" = chat ] && continue
      run_one "$round" "$system" "$scenario"
    done
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

python3 "$repo/scripts/bench/summarize.py" "$OUT" | tee "$OUT/summary.md"
