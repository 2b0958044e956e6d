//! The stable-Rust replay of fuzz bodies, shared by the `fuzz.rs` tests of `switchboard-core` and
//! `switchboard-gateway`: the checked-in corpus, then deterministic pseudo-random inputs. It owns
//! no Peer state and must not decide anything about what a body checks.

use std::path::{Path, PathBuf};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The fixed seed of the random inputs, so a failure reproduces.
const SEED: u64 = 0x5b_f022;

/// Every file of `dir` (sorted by name), read whole; panics when the folder is missing or empty.
pub fn corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Runs `body` on every file of `corpus_dir/target`, then on `n` inputs made by `make` from a
/// fixed-seed generator; a random input that makes `body` panic is printed as hex (named after
/// `target`) before the panic goes on.
pub fn replay(
    corpus_dir: &Path,
    target: &str,
    body: fn(&[u8]),
    n: usize,
    make: impl Fn(&mut ChaCha20Rng) -> Vec<u8>,
) {
    for input in corpus(&corpus_dir.join(target)) {
        body(&input);
    }
    let mut rng = ChaCha20Rng::seed_from_u64(SEED);
    for _ in 0..n {
        let input = make(&mut rng);
        if let Err(e) = std::panic::catch_unwind(|| body(&input)) {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            eprintln!("{target} failed on input {hex}");
            std::panic::resume_unwind(e);
        }
    }
}
