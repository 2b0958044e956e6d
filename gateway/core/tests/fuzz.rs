//! Replays the fuzz bodies (`switchboard_core::fuzzing`) on stable Rust: every file of the
//! checked-in corpus (`fuzz/corpus/<target>/`), then deterministic pseudo-random inputs (a fixed
//! seed, so a failure reproduces; the failing input is printed as hex). `cargo fuzz run <target>`
//! in `fuzz/` runs the same bodies under libFuzzer (nightly).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use switchboard_core::fuzzing;

/// The start instant every body gets (the core reads no clock).
fn start() -> Instant {
    static T: OnceLock<Instant> = OnceLock::new();
    *T.get_or_init(Instant::now)
}

fn random_bytes(rng: &mut ChaCha20Rng, max: usize) -> Vec<u8> {
    let mut v = vec![0u8; rng.next_u32() as usize % (max + 1)];
    rng.fill_bytes(&mut v);
    v
}

/// A few random edits of `base`: byte changes, cuts, duplicated ranges.
fn mutate(rng: &mut ChaCha20Rng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.next_u32() % 4 {
        if v.is_empty() {
            break;
        }
        let i = rng.next_u32() as usize % v.len();
        match rng.next_u32() % 4 {
            0 => v[i] = rng.next_u32() as u8,
            1 => v.truncate(i),
            2 => {
                let j = (i + rng.next_u32() as usize % 64).min(v.len());
                v.drain(i..j);
            }
            _ => {
                let j = (i + rng.next_u32() as usize % 64).min(v.len());
                let dup: Vec<u8> = v[i..j].to_vec();
                v.splice(i..i, dup);
            }
        }
    }
    v
}

fn run(target: &str, body: fn(&[u8]), n: usize, make: impl Fn(&mut ChaCha20Rng) -> Vec<u8>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    switchboard_testpeer::fuzz::replay(&dir, target, body, n, make);
}

#[test]
fn stun_local_ufrag() {
    run("stun_local_ufrag", fuzzing::stun_local_ufrag, 5000, |rng| {
        let mut v = random_bytes(rng, 200);
        if v.len() >= 8 && rng.next_u32() % 2 == 0 {
            v[0] &= 0x3f;
            v[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        }
        v
    });
}

#[test]
fn datagram() {
    run(
        "datagram",
        |d| fuzzing::datagram(start(), d),
        300,
        |rng| random_bytes(rng, 400),
    );
}

#[test]
fn sdp() {
    let base = fuzzing::BASE_OFFER.as_bytes();
    run(
        "sdp",
        |d| fuzzing::sdp(start(), d),
        300,
        |rng| mutate(rng, base),
    );
}

#[test]
fn commands() {
    run(
        "commands",
        |d| fuzzing::commands(start(), d),
        300,
        |rng| random_bytes(rng, 120),
    );
}
