#!/usr/bin/env bash
# Long churn soak (gateway/tests/soak.rs, the ignored test): SOAK_CYCLES cycles (default 500) of
# 4 parallel calls with real str0m Peers over loopback, in a release build, inside a network
# namespace with only `lo`. Asserts every Worker core, the process's fds and threads return to
# where they were after the warm-up (a tenth of the cycles, at most 50), the live event
# subscriptions where they were before the first call, and RSS within 15% of its post-warm-up value.
#   SOAK_CYCLES=2000 bash scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_CYCLES="${SOAK_CYCLES:-500}"
exec unshare -n -- bash -c 'ip link set lo up && exec cargo test --release -p switchboard-gateway --test soak -- --ignored --nocapture long_churn_soak_keeps_memory_flat'
