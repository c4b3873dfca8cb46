//! Generates prost messages and Courier services for the test corpus's
//! `corpus/test/test.proto` (deadlines and app errors from its Courier options).

fn main() {
    let protos = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/protos/stubgen");
    let file = protos.join("corpus/test/test.proto");
    if let Err(errors) = courier_stubgen::rust::compile(&[&protos], &[&file], &Default::default(), None) {
        for e in errors {
            eprintln!("{e}");
        }
        std::process::exit(1);
    }
}
