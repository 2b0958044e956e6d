//! Compiles `proto/switchboard/v1/*.proto` with `protox` (pure Rust, no `protoc` needed) and writes the
//! encoded descriptor set that the gateway registers for gRPC server reflection.

use std::{env, fs, path::PathBuf};

use protox::prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    for entry in fs::read_dir("proto/switchboard/v1")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    // read_dir order is unspecified; keep generated output stable.
    files.sort();
    let fds = protox::compile(&files, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // compile_fds ignores file_descriptor_set_path, so the descriptor set is written here.
    fs::write(
        out_dir.join("switchboard_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
