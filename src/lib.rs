//! The Switchboard control API, version 1 (`switchboard.v1`).
//!
//! This crate owns the protobuf messages, the tonic server traits and the tonic clients generated from
//! `proto/switchboard/v1/*.proto`, plus the encoded descriptor set used for gRPC server reflection.
//! A backend written in Rust depends on this crate alone. It holds no logic: the gateway lives in
//! `switchboard-gateway`.

pub mod v1 {
    //! Generated code for the `switchboard.v1` package.
    #![allow(missing_docs, clippy::all, clippy::use_self)]
    tonic::include_proto!("switchboard.v1");

    /// The encoded `FileDescriptorSet` of every `switchboard.v1` file, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/switchboard_descriptor.bin"));
}
