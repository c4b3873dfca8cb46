//! `courier._core`: the native module of Courier's Python binding.
//!
//! It only converts: every behaviour lives in `courier-core`. Python types are
//! described for type checkers in `py/python/courier/_core.pyi`.

use pyo3::prelude::*;

/// mimalloc for the Rust side of the module (as polars and pydantic-core
/// ship jemalloc/mimalloc): request buffers are allocated on an I/O thread
/// and freed on a Python thread, replies the other way round, and glibc's
/// per-thread caches take such frees badly (measured: 0.5 µs a call in
/// `_int_malloc`/`_int_free`/`malloc_consolidate` on the I/O thread; sync
/// echo 87k -> 97k calls/s on one core). Python's own objects are unaffected.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    m.add_function(wrap_pyfunction!(server::hand_back_held, m)?)?;
    m.add_function(wrap_pyfunction!(reflection::register_file_descriptors, m)?)?;
    m.add_function(wrap_pyfunction!(stubgen::stubgen_main, m)?)?;
    tls::register(m)?;
    debug::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
