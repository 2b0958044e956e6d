#!/usr/bin/env bash
# Builds str0m's `examples/chat.rs` (the reference SFU of BENCHMARKS.md) from the str0m crate source
# that the registry already gave cargo, in a temporary copy:
#   - the dev-dependencies that do not resolve on crates.io (str0m-rust-crypto 0.7, str0m-netem 0.5)
#     are dropped from the copy's Cargo.toml;
#   - only the bind address is patched: 127.0.0.1 instead of the first non-loopback address
#     (UDP media) and instead of 0.0.0.0 (its HTTPS signaling on port 3000).
# Nothing of str0m's code is committed here. Prints the path of the built binary on stdout.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
src="$(ls -d "$HOME"/.cargo/registry/src/*/str0m-0.25.* | sort -V | tail -1)"
[ -d "$src" ] || { echo "str0m 0.25 source not found in ~/.cargo/registry/src (run cargo build once)" >&2; exit 1; }
work="${CHAT_BUILD_DIR:-/tmp/switchboard-bench-chat}"
export CARGO_TARGET_DIR="$repo/target/bench-chat"
# A patched copy from an earlier run of this script is reused (so cargo does not rebuild str0m).
stamp="$work/str0m/.switchboard-patched"
want="$src $(sha256sum "$0" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  cargo build --release --example chat --manifest-path "$work/str0m/Cargo.toml" >&2
  echo "$CARGO_TARGET_DIR/release/examples/chat"
  exit 0
fi
rm -rf "$work" && mkdir -p "$work" && cp -r "$src" "$work/str0m"
cd "$work/str0m"
# Drop what does not resolve on crates.io: the dev-dependencies str0m-rust-crypto 0.7 and str0m-netem
# 0.5, the optional crypto backends str0m-openssl / -rust-crypto / -apple-crypto 0.7 and
# str0m-wincrypto 0.9 with the features
# naming them, and the published lock file that pins them. aws-lc-rs (the default) stays.
rm -f Cargo.lock
python3 - <<'PY'
import re
text = open("Cargo.toml").read()
drop_sections = {"[dev-dependencies.netem]", "[dev-dependencies.str0m-rust-crypto]",
                 "[dependencies.str0m-openssl]", "[dependencies.str0m-rust-crypto]",
                 "[target.'cfg(target_vendor = \"apple\")'.dependencies.str0m-apple-crypto]",
                 "[target.\"cfg(windows)\".dependencies.str0m-wincrypto]"}
drop_features = {"openssl", "openssl-dimpl", "rust-crypto", "vendored", "apple-crypto",
                 "wincrypto", "wincrypto-dimpl"}
out, skip, section = [], False, ""
lines = iter(text.splitlines())
for line in lines:
    if line.startswith("["):
        section = line.strip()
        skip = section in drop_sections
    if skip:
        continue
    m = re.match(r"^([A-Za-z0-9_-]+) = (.*)$", line)
    if section == "[features]" and m and m.group(1) in drop_features:
        if m.group(2).startswith("[") and not m.group(2).rstrip().endswith("]"):
            for cont in lines:
                if cont.strip().startswith("]"):
                    break
        continue
    out.append(line)
open("Cargo.toml", "w").write("\n".join(out) + "\n")
PY
# Start from the workspace's lock so shared dependencies keep the versions already fetched.
cp "$repo/Cargo.lock" Cargo.lock
grep -q 'util::select_host_address()' examples/chat.rs
sed -i 's/let host_addr = util::select_host_address();/let host_addr: std::net::IpAddr = std::net::Ipv4Addr::LOCALHOST.into();/' examples/chat.rs
sed -i 's/"0\.0\.0\.0:3000"/"127.0.0.1:3000"/' examples/chat.rs
grep -q 'Ipv4Addr::LOCALHOST' examples/chat.rs && grep -q '"127.0.0.1:3000"' examples/chat.rs
# util.rs is still compiled (mod util;) but no longer called.
sed -i 's/^mod util;/#[allow(dead_code)]\nmod util;/' examples/chat.rs
# The target directory survives between runs (not the workspace's: another lockfile).
cargo build --release --example chat >&2
echo "$want" > "$stamp"
echo "$CARGO_TARGET_DIR/release/examples/chat"
