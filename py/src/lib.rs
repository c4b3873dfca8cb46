//! `courier._core`: the native module of Courier's Python binding.
//!
//! It only converts: every behaviour lives in `courier-core`. Python types are
//! described for type checkers in `py/python/courier/_core.pyi`.

use pyo3::prelude::*;

mod asyncio;
mod channel;
mod ctx;
mod debug;
mod errors;
mod reflection;
mod server;
mod stubgen;
mod tls;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ctx::Context>()?;
    m.add_class::<server::Server>()?;
    m.add_class::<server::Call>()?;
    m.add_class::<channel::Method>()?;
    m.add_class::<channel::Channel>()?;
    m.add_class::<channel::ClientCall>()?;
    m.add_class::<asyncio::AbortOnCancel>()?;
    m.add_function(wrap_pyfunction!(server::flush_replies, m)?)?;
    m.add_function(wrap_pyfunction!(reflection::register_file_descriptors, m)?)?;
    m.add_function(wrap_pyfunction!(stubgen::stubgen_main, m)?)?;
    tls::register(m)?;
    debug::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
