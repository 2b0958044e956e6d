//! Shared by the tests that start real clients.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Fails loudly unless this process sees only the loopback interface: WebRTC clients run only in
/// a network namespace with just `lo` (the README's test command makes one).
pub fn assert_loopback_only_namespace() {
    let dev = std::fs::read_to_string("/proc/self/net/dev").expect("read /proc/self/net/dev");
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .collect();
    assert_eq!(
        ifaces,
        ["lo"],
        "real-client tests run only in a network namespace with just `lo`: use `bash scripts/test.sh`"
    );
}
