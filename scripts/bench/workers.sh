#!/usr/bin/env bash
# Two Workers against one: the release gateway with `media.workers = 1` and with
# `media.workers = 2`, alternated run by run (the order flips every round), against the same ramp
# of switchboard-loadgen: ROOMS Rooms (the gateway places each Room on a Worker by a hash of its id;
# with the loadgen's names `loadgen-0..3`, two land on each Worker, which every report checks in
# `sfu_sockets`), one publisher each, subscribers added WSTEP per Room per step until > 1 % loss or
# > 1 % of packets over 500 ms late.
#
#   scripts/bench/workers.sh                  # 2 rounds
#   ROUNDS=1 WSTEP=50 scripts/bench/workers.sh
#
# How the cores are shared: this machine has 2 vCPUs, so nothing is pinned: the gateway (1 or 2
# Workers, plus its tokio threads) and the load generator (one media thread) share both vCPUs
# under the scheduler, with whatever else runs on the machine. The load generator costs roughly a
# third of what the gateway spends per packet, so at the 2-Worker knee it takes a share of the
# second core that a third machine would not: the knee ratio is a floor of what 2 Workers on 2
# dedicated cores give. Packets per SFU CPU-second (utime+stime of the gateway) says whether a
# second Worker costs efficiency; the knee ratio says whether it adds capacity.
#
# Everything runs inside a fresh network namespace with only `lo`. Results (JSON per run, summary)
# go to target/bench-workers/<UTC time>/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
. "$repo/scripts/bench/lib.sh"

ROUNDS="${ROUNDS:-2}"
ROOMS="${ROOMS:-4}"
WSTART="${WSTART:-25}"; WSTEP="${WSTEP:-25}"; WMAX="${WMAX:-500}"
SETTLE="${SETTLE:-3}"; WINDOW="${WINDOW:-5}"

if [ -z "${SWITCHBOARD_BENCH_NS:-}" ]; then
  echo "== building release binaries" >&2
  cargo build --release -p switchboard-gateway -p switchboard-loadgen >&2
  OUT="$repo/target/bench-workers/$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$OUT"
  machine_info "$OUT/machine.txt"
  echo "sharing: gateway and load generator unpinned on all $(nproc) vCPUs" >> "$OUT/machine.txt"
  export OUT
fi
enter_namespace "$0"

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="1 2"; else order="2 1"; fi
  for w in $order; do
    run="r$round-w$w"
    echo "== round $round: $w Worker(s), $ROOMS Rooms" >&2
    start_switchboard "$w" all "$OUT/$run.sfu.log"
    if ! "$loadgen" --rooms "$ROOMS" --publishers 1 --subscribers "$WSTART" --ramp "$WSTEP" \
        --ramp-max "$WMAX" --settle "$SETTLE" --duration "$WINDOW" --json --gateway-pid "$SFU_PID" \
        > "$OUT/$run.json" 2> "$OUT/$run.log"; then
      echo "   load generator failed, see $OUT/$run.log" >&2
    fi
    tail -n 3 "$OUT/$run.log" >&2 || true
    stop_sfu
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"

python3 "$repo/scripts/bench/summarize-workers.py" "$OUT" | tee "$OUT/summary.md"
