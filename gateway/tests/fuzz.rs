//! Replays the gateway's fuzz bodies (`switchboard_gateway::fuzzing`) on stable Rust: the
//! checked-in corpus (`fuzz/corpus/<target>/`), then deterministic pseudo-random inputs (fixed
//! seed; a failing input is printed as hex). `cargo fuzz run <target>` in `fuzz/` runs the same
//! bodies under libFuzzer.

use std::path::PathBuf;

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use switchboard_gateway::fuzzing;

fn run(target: &str, body: fn(&[u8]), n: usize, make: impl Fn(&mut ChaCha20Rng) -> Vec<u8>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    switchboard_testpeer::fuzz::replay(&dir, target, body, n, make);
}

/// Random streams of plausible frames: mostly valid lengths, a STUN-looking first frame, and now
/// and then a zero or oversize length.
#[test]
fn ice_tcp_frames() {
    run("ice_tcp_frames", fuzzing::ice_tcp_frames, 5000, |rng| {
        let mut v = vec![0u8; 8];
        rng.fill_bytes(&mut v);
        for i in 0..rng.next_u32() % 6 {
            let len = match rng.next_u32() % 10 {
                0 => 0,
                1 => 601 + rng.next_u32() as usize % 1000,
                _ => 20 + rng.next_u32() as usize % 200,
            };
            v.extend_from_slice(&(len as u16).to_be_bytes());
            let mut f = vec![0u8; len];
            rng.fill_bytes(&mut f);
            if i == 0 && len >= 20 && rng.next_u32() % 4 != 0 {
                f[0] &= 0x3f;
                f[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
            }
            v.extend_from_slice(&f);
        }
        v.truncate(v.len() - rng.next_u32() as usize % 8.min(v.len()));
        v
    });
}

#[test]
fn turn_message() {
    run("turn_message", fuzzing::turn_message, 5000, |rng| {
        let mut v = vec![0u8; 1 + rng.next_u32() as usize % 300];
        rng.fill_bytes(&mut v);
        if rng.next_u32() % 2 == 0 {
            v[0] |= 0x80;
        }
        v
    });
}

/// Sessions of signed requests: op kinds weighted toward Allocate first, then any mix, with
/// payloads long enough to carry addresses, lifetimes and a few raw attributes.
#[test]
fn turn_session() {
    run("turn_session", fuzzing::turn_session, 3000, |rng| {
        let mut v = vec![rng.next_u32() as u8];
        let ops = 1 + rng.next_u32() % 10;
        for i in 0..ops {
            let kind = if i == 0 && rng.next_u32() % 4 != 0 {
                0
            } else {
                rng.next_u32() as u8
            };
            let len = 4 + rng.next_u32() as usize % 60;
            v.push(kind);
            v.push(len as u8);
            let mut p = vec![0u8; len];
            rng.fill_bytes(&mut p);
            v.extend_from_slice(&p);
        }
        v
    });
}
