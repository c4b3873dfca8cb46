//! `courier-stubgen`: Courier's stub generator.
//!
//! * Reads `.proto` files with [`protox`] (pure Rust, no `protoc`): include paths,
//!   Google's well-known types and `courier/options.proto` built in.
//! * Reads Courier's options ([`model`]): deadlines (mandatory), app-error enums
//!   and their gRPC codes, with out-of-file deadlines for protos a team cannot edit.
//! * Writes Python ([`python`]): `x_pb2.py` (as protoc's Python generator writes it),
//!   `x_pb2.pyi` (as mypy-protobuf writes it) and `x_courier.py` (servicers,
//!   clients and method tables with an explicit `ctx`).
//! * Generates Rust services ([`rust`]): a `prost-build` [`ServiceGenerator`](prost_build::ServiceGenerator)
//!   that emits a Courier service trait, registration and a client with `ctx`.
//!
//! Every error names the file and line it is about ([`Error`]); bad input never panics.

pub mod cli;
pub mod compile;
pub mod go;
pub mod model;
pub mod python;
pub mod rust;
mod wire;

pub use compile::{compile, Compiled, Error};
pub use model::{Deadline, DeadlineOverrides, Model};

/// `courier/options.proto`, built into the generator (importable without `-I`).
pub const OPTIONS_PROTO: &str = include_str!("../../proto/courier/options.proto");

/// A generated file: its path relative to the output directory, and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    pub path: String,
    pub content: String,
}
