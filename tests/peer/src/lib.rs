//! The "Courier Rust" peer of Courier's cross-language tests.
//!
//! * [`proto`]: hand-written `prost` messages of `tests/protos/courier/test/test.proto`
//!   (no `protoc` needed).
//! * [`service`]: a Rust-native implementation of `courier.test.Test` on the core's
//!   [`Handler`](courier_core::Handler) API, with the semantics documented in the proto.
//! * [`cases`]: the interop cases the `courier-test-client` binary runs with a
//!   [`Channel`](courier_core::Channel) against any server implementing `Test`.
//!
//! The binaries `courier-test-server` and `courier-test-client` are thin wrappers.

pub mod cases;
pub mod proto;
pub mod service;

pub use service::{method_desc, register, SERVICE};
