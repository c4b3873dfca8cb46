//! Bad input never panics the generator: every corpus file, mutated in many
//! ways (truncated, characters dropped, braces and quotes inserted), either
//! generates or fails with errors that name a file; the same holds for
//! arbitrary command lines.

use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/protos/stubgen")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Runs the whole pipeline; panics only if the generator panicked.
fn generate(include: &Path, file: &Path) -> Result<usize, Vec<courier_stubgen::Error>> {
    let r = std::panic::catch_unwind(|| {
        let mut overrides = courier_stubgen::DeadlineOverrides::default();
        if file.ends_with("realworld/test.proto") {
            overrides.add_file(&include.join("corpus/realworld/realworld.courier-options"))?;
        }
        let compiled = courier_stubgen::compile(&[include.to_path_buf()], &[file.to_path_buf()])?;
        let model = courier_stubgen::model::build(&compiled, &overrides)?;
        Ok(courier_stubgen::python::generate(&compiled, &model)?.len())
    });
    r.unwrap_or_else(|_| panic!("the generator panicked on {}:\n{}", file.display(), std::fs::read_to_string(file).unwrap_or_default()))
}

#[test]
fn mutated_protos_never_panic() {
    let dir = std::env::temp_dir().join(format!("courier-stubgen-robustness-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&corpus(), &dir);
    let files = ["corpus/svc/echo.proto", "corpus/features.proto", "corpus/legacy.proto", "corpus/realworld/test.proto"];
    let mut runs = 0;
    let mut failures = 0;
    for name in files {
        let path = dir.join(name);
        let original = std::fs::read_to_string(&path).unwrap();
        let bytes = original.as_bytes();
        let step = (bytes.len() / 40).max(1);
        for pos in (0..bytes.len()).step_by(step) {
            let mut variants: Vec<Vec<u8>> = vec![bytes[..pos].to_vec()];
            let mut dropped = bytes.to_vec();
            dropped.remove(pos);
            variants.push(dropped);
            for ins in [&b"{"[..], b"\"", b"}", b";", b"= 0", b"[(courier.rpc_error) = true]", b"\xff"] {
                let mut v = bytes[..pos].to_vec();
                v.extend_from_slice(ins);
                v.extend_from_slice(&bytes[pos..]);
                variants.push(v);
            }
            for v in variants {
                std::fs::write(&path, &v).unwrap();
                runs += 1;
                if let Err(errors) = generate(&dir, &path) {
                    failures += 1;
                    assert!(!errors.is_empty());
                    for e in &errors {
                        assert!(e.file.is_some() || e.message.contains("no service or method"), "an error without a file: {e}");
                        assert!(!e.to_string().is_empty());
                    }
                }
            }
        }
        std::fs::write(&path, &original).unwrap();
        assert!(generate(&dir, &path).is_ok(), "{name} itself must generate");
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(runs > 1000 && failures > runs / 4, "runs {runs}, failures {failures}");
}

#[test]
fn arbitrary_command_lines_never_panic() {
    let c = corpus();
    let inc = c.to_string_lossy().into_owned();
    let cases: Vec<Vec<String>> = vec![
        vec![],
        vec!["-I".into()],
        vec!["--python_out".into()],
        vec!["--deadline".into()],
        vec!["--deadline=".into(), "a.proto".into()],
        vec!["--deadline==".into(), "a.proto".into()],
        vec!["--deadline=x=-5s".into(), "a.proto".into()],
        vec!["--deadline=x=1e400s".into(), "a.proto".into()],
        vec!["--courier_options=/nonexistent".into(), "a.proto".into()],
        vec!["-I".into(), inc.clone(), "--python_out=/dev/null/x".into(), format!("{inc}/corpus/test/test.proto")],
        vec!["-I".into(), inc.clone(), "--python_out=/tmp/x".into(), "/etc/hostname".into()],
        vec!["-I".into(), "/nonexistent".into(), "--python_out=/tmp/x".into(), "x.proto".into()],
        vec!["-I".into(), inc.clone(), "--python_out=/tmp/x".into(), inc.clone()],
    ];
    for args in cases {
        let (code, _out, err) = courier_stubgen::cli::main_with_args(&args);
        assert!(code == 1 || code == 2, "{args:?}: exit {code}, {err}");
        assert!(!err.is_empty() && !err.contains("internal error"), "{args:?}: {err}");
    }
}

#[test]
fn deadline_syntax() {
    use courier_stubgen::Deadline;
    use std::time::Duration;
    assert_eq!(Deadline::parse("500ms"), Ok(Deadline::Default(Duration::from_millis(500))));
    assert_eq!(Deadline::parse(" 1.5s "), Ok(Deadline::Default(Duration::from_millis(1500))));
    assert_eq!(Deadline::parse("2m"), Ok(Deadline::Default(Duration::from_secs(120))));
    assert_eq!(Deadline::parse("None"), Ok(Deadline::NoDeadline));
    for bad in ["", "5", "5 parsecs", "0ms", "0.1ms", "-1s", "nan s", "1e400s", "s"] {
        assert!(Deadline::parse(bad).is_err(), "{bad:?}");
    }
}
