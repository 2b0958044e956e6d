# Shared by the end-to-end benchmark scripts (sourced, not run): entering a loopback-only network
# namespace, the machine description, waiting for a port, starting and stopping the release
# gateway. Each script sets OUT (its result directory) before calling these.

bench_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
gateway="$bench_repo/target/release/switchboard"
loadgen="$bench_repo/target/release/switchboard-loadgen"

# machine_info FILE: date, commit, kernel, CPUs, load average, into FILE.
machine_info() {
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$bench_repo" rev-parse --short HEAD)$(git -C "$bench_repo" diff --quiet || echo ' (dirty)')"
    echo "kernel: $(uname -r)"
    lscpu | grep -E '^(Model name|CPU\(s\)|Hypervisor vendor)'
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    # Gateway settings given through the environment (they reach every gateway started).
    env | grep '^SWITCHBOARD__' | sed 's/^/gateway env: /' || true
  } > "$1"
}

# enter_namespace SCRIPT ARGS...: re-runs SCRIPT inside a fresh network namespace with only `lo`
# (once: SWITCHBOARD_BENCH_NS marks the inner run). Returns only when already inside.
enter_namespace() {
  if [ -z "${SWITCHBOARD_BENCH_NS:-}" ]; then
    export SWITCHBOARD_BENCH_NS=1
    exec unshare -n -- bash -c 'ip link set lo up && exec "$0" "$@"' "$@"
  fi
  # One UDP socket per load-generator Peer.
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

wait_port() { # host port
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $2 never opened" >&2; return 1
}

# start_switchboard WORKERS CPUS LOG: the release gateway with WORKERS media Workers, pinned to
# CPUS (taskset list) unless CPUS is "all"; sets SFU_PID.
start_switchboard() {
  local pin=()
  [ "$2" = all ] || pin=(taskset -c "$2")
  SWITCHBOARD__MEDIA__WORKERS="$1" SWITCHBOARD__GRPC__LISTEN=127.0.0.1:50051 \
  SWITCHBOARD__TURN__ENABLED=false SWITCHBOARD__DEMO__ENABLED=false \
  SWITCHBOARD__LOG__FILTER=warn \
    "${pin[@]}" "$gateway" > "$3" 2>&1 &
  SFU_PID=$!
  wait_port 127.0.0.1 50051
}

stop_sfu() {
  kill "$SFU_PID" 2>/dev/null || true
  wait "$SFU_PID" 2>/dev/null || true
}
