//! The stub generator (crate courier-stubgen), shipped in the wheel: the
//! `courier-stubgen` console script and `python -m courier.stubgen` call this.

use pyo3::prelude::*;

/// Runs `courier-stubgen` with `args` (without the program name); returns the
/// exit code and what to print on stdout and stderr. The GIL is released.
#[pyfunction]
pub fn stubgen_main(py: Python<'_>, args: Vec<String>) -> (i32, String, String) {
    py.detach(|| courier_stubgen::cli::main_with_args(&args))
}
