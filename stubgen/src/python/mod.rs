//! Python output: `x_pb2.py`, `x_pb2.pyi` and `x_courier.py` per proto file.

pub mod courier;
pub mod pb2;
pub mod pyi;

use crate::compile::Compiled;
use crate::model::Model;
use crate::GeneratedFile;

/// The protobuf runtime version the generated `_pb2.py` modules declare (the
/// oldest runtime that loads them).
pub const GENCODE_VERSION: (u32, u32, u32) = (5, 29, 0);

/// `a/b-c.proto` -> `a.b_c_pb2` (protoc's ModuleName).
pub fn module_name(file: &str) -> String {
    let base = file.strip_suffix(".proto").unwrap_or(file);
    format!("{}_pb2", base.replace('-', "_").replace('/', "."))
}

/// protoc's ModuleAlias: `a.b_c_pb2` -> `a_dot_b__c__pb2`.
pub fn module_alias(file: &str) -> String {
    module_name(file).replace('_', "__").replace('.', "_dot_")
}

/// Output path of a module for `file` with `suffix` (`_pb2.py`, `_courier.py`).
pub fn output_path(file: &str, suffix: &str) -> String {
    let base = file.strip_suffix(".proto").unwrap_or(file);
    format!("{}{suffix}", base.replace('-', "_"))
}

/// Python keywords (mypy-protobuf's list).
pub const PYTHON_RESERVED: &[&str] = &[
    "False", "None", "True", "and", "as", "async", "await", "assert", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal", "not", "or",
    "pass", "raise", "return", "try", "while", "with", "yield",
];

/// Generates every Python file for the compiled protos. Refuses services and
/// methods whose names are Python keywords (a servicer could not define them).
pub fn generate(compiled: &Compiled, model: &Model) -> Result<Vec<GeneratedFile>, Vec<crate::Error>> {
    let mut errors = Vec::new();
    for f in compiled.files() {
        for svc in model.services_of(f.name()) {
            if PYTHON_RESERVED.contains(&svc.desc.name()) {
                errors.push(crate::compile::error_at(&f, svc.desc.path(), format!("service name {} is a Python keyword", svc.desc.name())));
            }
            for m in &svc.methods {
                if PYTHON_RESERVED.contains(&m.desc.name()) {
                    errors.push(
                        crate::compile::error_at(&f, m.desc.path(), format!("method name {}.{} is a Python keyword", svc.desc.full_name(), m.desc.name()))
                            .with_help("a Python servicer cannot define a method of that name: rename the rpc"),
                    );
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut out = Vec::new();
    for f in compiled.files() {
        out.push(GeneratedFile { path: output_path(f.name(), "_pb2.py"), content: pb2::generate(compiled, &f) });
        out.push(GeneratedFile { path: output_path(f.name(), "_pb2.pyi"), content: pyi::generate(compiled, &f) });
        if !model.services_of(f.name()).is_empty() || model.app_errors_of(f.name()).next().is_some() {
            out.push(GeneratedFile { path: output_path(f.name(), "_courier.py"), content: courier::generate(compiled, model, &f) });
        }
    }
    Ok(out)
}
