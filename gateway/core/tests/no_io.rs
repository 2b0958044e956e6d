//! The core's architecture invariant, checked: no async runtime, RPC or socket crate in its
//! dependencies, and no clock reads, sockets or task spawns in its source.

use std::path::Path;

#[test]
fn the_core_depends_on_no_io_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for banned in [
        "tokio",
        "tonic",
        "prost",
        "switchboard =",
        "switchboard.workspace",
        "mio",
        "socket2",
    ] {
        assert!(!deps.contains(banned), "core depends on {banned}");
    }
}

#[test]
fn the_core_source_reads_no_clock_and_opens_no_socket() {
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    let mut files = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may take a base instant from the clock; the code under test may not.
            let text = text.split("#[cfg(test)]").next().unwrap();
            for banned in [
                "Instant::now",
                "SystemTime::now",
                "UdpSocket",
                "TcpStream",
                "std::thread::spawn",
                "tokio::",
                "thread_rng",
            ] {
                assert!(
                    !text.contains(banned),
                    "{} mentions {banned}",
                    path.display()
                );
            }
        }
    }
    assert!(files >= 6, "scanned the whole source tree");
}
