//! The descriptors the core serves for its built-in services (health,
//! reflection) are current: courier-stubgen compiles proto/grpc/ to the bytes
//! in core/src/reflection_builtin.binpb. Regenerate with
//! `COURIER_REGENERATE=1 cargo test -p courier-stubgen-example --test builtin_descriptors`.

use std::path::{Path, PathBuf};

#[test]
fn builtin_descriptor_set_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let proto = root.join("proto");
    let files: Vec<PathBuf> = ["grpc/health/v1/health.proto", "grpc/reflection/v1/reflection.proto", "grpc/reflection/v1alpha/reflection.proto"]
        .iter()
        .map(|f| proto.join(f))
        .collect();
    let compiled = courier_stubgen::compile(&[proto.clone()], &files).expect("built-in protos compile");
    let mut overrides = courier_stubgen::DeadlineOverrides::default();
    overrides.add_file(&root.join("stubgen/example/builtin-deadlines.courier-options")).expect("options file");
    courier_stubgen::model::build(&compiled, &overrides).expect("deadlines given for every method");
    let set = compiled.encode_file_descriptor_set();
    if std::env::var_os("COURIER_REGENERATE").is_some() {
        std::fs::write(root.join("core/src/reflection_builtin.binpb"), &set).unwrap();
    }
    assert!(set == courier_core::reflection::BUILTIN_DESCRIPTOR_SET, "core/src/reflection_builtin.binpb is stale: regenerate it (see this test's doc)");
}
