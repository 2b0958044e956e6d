#!/usr/bin/env bash
# Runs every Switchboard test. This is the README's test command and what .ci/run calls.
#
# 1. Installs what the tests need when it is missing (a C compiler for aws-lc-sys, iproute2 and
#    util-linux for the loopback-only network namespace, Chromium, Node and npm for the browser
#    tests, Python with venv for the aiortc and stub tests, coturn for the TURN interop test,
#    redis-server for the cluster tests (gateway/tests/cluster.rs starts its own), GStreamer
#    (webrtcbin) and the build tools of dimpl's own test suite, and
#    the npm and PyPI packages). A Rust toolchain >= 1.89 must already be
#    installed (https://rustup.rs): Debian's packaged rustc is too old, so this fails loudly.
# 2. Builds everything while the network is available (crates are fetched here).
# 3. Checks formatting and lints, then runs the whole test suite inside a network namespace that
#    has only `lo` (as root), so no test can send a packet off this machine; then the own test
#    suites of the patched copies in third_party/ (dimpl, str0m, is), which hold each patch's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev make)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v kill >/dev/null 2>&1 || need_apt+=(procps)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/firefox-esr ] || need_apt+=(firefox-esr)
command -v turnserver >/dev/null 2>&1 || need_apt+=(coturn)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v timeout >/dev/null 2>&1 || need_apt+=(coreutils)
# GStreamer webrtcbin (gateway/tests/webrtcbin.rs), driven from Debian's python3 with python3-gi.
gst_pkgs=(gstreamer1.0-plugins-bad gstreamer1.0-plugins-good gstreamer1.0-nice gstreamer1.0-tools
  gir1.2-gst-plugins-bad-1.0 python3-gi python3-venv)
dpkg -s "${gst_pkgs[@]}" >/dev/null 2>&1 || need_apt+=("${gst_pkgs[@]}")
# dimpl's own test suite (third_party/dimpl) builds wolfssl (autotools, bindgen -> libclang).
command -v autoreconf >/dev/null 2>&1 || need_apt+=(autoconf automake libtool)
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
if ((${#need_apt[@]})); then
  say "installing ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then die "missing ${need_apt[*]}; run as root or install them"; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust >= 1.89 with rustup (https://rustup.rs)"
rust_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
[ "$rust_minor" -ge 89 ] || die "Rust $(rustc --version) is too old: 1.89 or newer is needed"

# str0m's own suite as third_party/README.md runs it (aws-lc-rs, its test exports), library and
# test targets only.
STR0M_TEST_ARGS="--no-default-features --features aws-lc-rs,_internal_test_exports --lib --tests"

say "building (fetches crates and npm packages)"
cargo build --workspace --tests --bins --locked
(cd clients/web/test && npm ci --no-audit --no-fund --loglevel=error)
(cd clients/node && npm ci --no-audit --no-fund --loglevel=error)
if [ ! -x clients/python/.venv/bin/python ]; then python3 -m venv clients/python/.venv; fi
clients/python/.venv/bin/pip install --quiet --disable-pip-version-check -r clients/python/requirements.txt
PYTHON=clients/python/.venv/bin/python bash clients/python/generate.sh
if [ ! -x clients/gstreamer/.venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages clients/gstreamer/.venv
fi
clients/gstreamer/.venv/bin/pip install --quiet --disable-pip-version-check -r clients/gstreamer/requirements.txt
(cd third_party/dimpl && cargo test --locked --no-run)
(cd third_party/str0m && cargo test --locked --no-run $STR0M_TEST_ARGS)
(cd third_party/is && cargo test --locked --no-run)

say "formatting and lints"
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all --check
else
  die "rustfmt is missing: rustup component add rustfmt"
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets --locked -- -D warnings
else
  die "clippy is missing: rustup component add clippy"
fi

say "tests"
test_cmd=(cargo test --workspace --locked --offline)
if [ "$(id -u)" -eq 0 ] && unshare -n true 2>/dev/null; then
  echo "(inside a network namespace with only lo)"
  unshare -n -- bash -c 'ip link set lo up && exec "$@"' _ "${test_cmd[@]}"
else
  echo "(not root or no unshare: tests run in this namespace; they bind loopback only)"
  "${test_cmd[@]}"
fi

say "tests of the patched dimpl (third_party/dimpl)"
(cd third_party/dimpl && cargo test --locked --offline)

# The patched str0m and its ICE agent: their own suites hold each patch's tests (liveness, m-line
# recycling, candidates in every m-section, ...). Doctests are left out: two of str0m's name the
# unpublished str0m_rust_crypto crate (third_party/README.md).
say "tests of the patched str0m and is (third_party/str0m, third_party/is)"
(cd third_party/str0m && cargo test --locked --offline $STR0M_TEST_ARGS)
(cd third_party/is && cargo test --locked --offline)
