//! Server reflection: generated code registers its files' descriptors.

use bytes::Bytes;
use pyo3::prelude::*;

use crate::errors::value_error;

/// Registers serialized `FileDescriptorProto`s for server reflection (every
/// server of this process answers with them).
#[pyfunction]
pub fn register_file_descriptors(files: Vec<Vec<u8>>) -> PyResult<()> {
    courier_core::reflection::register_file_descriptors(files.into_iter().map(Bytes::from)).map_err(value_error)
}
