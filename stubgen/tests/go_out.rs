//! `--go_out`: Go stubs for the Go binding. The generated code of the test
//! service that go-cgo checks in (go-cgo/testpb) must be what the generator
//! writes today; and a file with every Courier option generates and carries
//! its deadlines, app-error enums and cross-package message types.
//! (Runs protoc-gen-go: found on PATH or in ~/.cache/courier/go/bin, or
//! installed there from the Go module proxy.)

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

fn stubgen(args: &[&str]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (code, out, err) = courier_stubgen::cli::main_with_args(&args);
    (code, out + &err)
}

#[test]
fn go_testpb_is_current() {
    let dir = repo().join("go-cgo/testpb");
    let out = std::env::temp_dir().join(format!("courier-go-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (code, msg) = stubgen(&["-I", dir.to_str().unwrap(), &format!("--go_out={}", out.display()), "--go_opt=paths=source_relative", "test.proto"]);
    assert_eq!(code, 0, "{msg}");
    for f in ["test.pb.go", "test_courier.pb.go"] {
        let want = std::fs::read_to_string(out.join(f)).unwrap();
        let have = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        assert!(
            want == have,
            "go-cgo/testpb/{f} is stale: regenerate it with `go generate ./testpb` in go-cgo/ and commit it"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn go_stubs_carry_every_courier_option() {
    let corpus = repo().join("tests/protos/stubgen");
    let echo = corpus.join("corpus/svc/echo.proto");
    let out = std::env::temp_dir().join(format!("courier-go-svc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (code, msg) = stubgen(&[
        "-I",
        corpus.to_str().unwrap(),
        &format!("--go_out={}", out.display()),
        "--go_opt=paths=source_relative",
        "--go_opt=Mcorpus/svc/echo.proto=example.com/corpus/svc",
        "--go_opt=Mcorpus/common/common.proto=example.com/corpus/common",
        "--go_opt=Mcorpus/svc/errors.proto=example.com/corpus/svc",
        "--go_opt=Mcorpus/svc/quota.proto=example.com/corpus/svc",
        echo.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{msg}");
    let go = std::fs::read_to_string(out.join("corpus/svc/echo_courier.pb.go")).unwrap();
    for want in [
        "package svc",
        "type EchoServer interface",
        "func RegisterEchoServer(s *courier.Server, srv EchoServer) error",
        "func NewEchoClient(cc *courier.ClientConn) *EchoClient",
        "courier.NoDeadline",
        "emptypb \"google.golang.org/protobuf/types/known/emptypb\"",
        "func (x EchoError) Err(message string) error",
        "func EchoErrorOf(err error) (EchoError, bool)",
        "EchoError_ECHO_ERROR_GONE:",
        "courier.NotFound",
    ] {
        assert!(go.contains(want), "{want:?} missing from echo_courier.pb.go:\n{go}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn go_out_errors_are_precise() {
    let corpus = repo().join("tests/protos/stubgen");
    let echo = corpus.join("corpus/svc/echo.proto");
    let (code, msg) = stubgen(&["-I", corpus.to_str().unwrap(), "--go_out=/tmp/x", "--go_plugin=/nonexistent/protoc-gen-go", echo.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(msg.contains("/nonexistent/protoc-gen-go"), "{msg}");
}
