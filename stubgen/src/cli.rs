//! The command line, protoc-like: `courier-stubgen -I DIR --python_out=OUT a.proto ...`.
//! Shared by the Rust binary and the Python console script (through the native module).

use std::path::PathBuf;

use crate::compile::Error;
use crate::model::DeadlineOverrides;

pub const USAGE: &str = "\
usage: courier-stubgen [-I DIR]... [--python_out=DIR] [--go_out=DIR] [--descriptor_set_out=FILE]
                       [--deadline=SERVICE[/METHOD]=DURATION]... [--courier_options=FILE]
                       PROTO...

Reads .proto files (no protoc needed; Google's well-known types and
courier/options.proto are built in) and writes, per file, into --python_out:
  x_pb2.py      the protobuf runtime module (as protoc writes it)
  x_pb2.pyi     type stubs (as mypy-protobuf writes them)
  x_courier.py  servicers, clients and method tables with an explicit ctx

options:
  -I DIR, --proto_path=DIR   where imports are looked up (in order; default: .)
  --python_out=DIR           write Python code into DIR
  --go_out=DIR               write Go code into DIR: x.pb.go (the stock protoc-gen-go,
                             fed our descriptors; installed from the Go module proxy
                             into ~/.cache/courier/go/bin when missing) and
                             x_courier.pb.go (server interface, registration and client
                             for github.com/courier-rpc/courier/go-cgo)
  --go_opt=OPT               a protoc-gen-go option (paths=source_relative, M...=...)
  --go_plugin=PATH           the protoc-gen-go to run
  --descriptor_set_out=FILE  write a FileDescriptorSet (imports and options included)
  --deadline=KEY=DURATION    a deadline for a service (pkg.Service) or method
                             (pkg.Service/Method) of a proto you cannot edit:
                             500ms, 5s, 2m or none; overrides the file's options
  --courier_options=FILE     the same, one `KEY = DURATION` per line (# comments)
  --version                  print the version
  -h, --help                 print this help

Deadlines are mandatory: every method needs (courier.method_default_deadline_ms),
its service's (courier.service_default_deadline_ms), (courier.method_no_deadline),
or a --deadline / --courier_options entry.";

/// Parsed arguments.
#[derive(Debug, Default)]
pub struct Args {
    pub includes: Vec<PathBuf>,
    pub python_out: Option<PathBuf>,
    pub go_out: Option<PathBuf>,
    pub go: crate::go::GoOptions,
    pub descriptor_set_out: Option<PathBuf>,
    pub overrides: DeadlineOverrides,
    pub files: Vec<PathBuf>,
    pub help: bool,
    pub version: bool,
}

/// Parses arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Args, Vec<Error>> {
    let mut a = Args::default();
    let mut errors = Vec::new();
    let mut i = 0;
    let mut option_files = Vec::new();
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let mut value = |flag: &str| -> Option<String> {
            if let Some(v) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
                return Some(v.to_string());
            }
            if arg == flag {
                let v = args.get(i).cloned();
                i += 1;
                return v;
            }
            None
        };
        if arg == "-h" || arg == "--help" {
            a.help = true;
        } else if arg == "--version" {
            a.version = true;
        } else if let Some(rest) = arg.strip_prefix("-I") {
            let dir = if rest.is_empty() {
                let v = args.get(i).cloned();
                i += 1;
                v
            } else {
                Some(rest.to_string())
            };
            match dir {
                Some(d) => a.includes.push(PathBuf::from(d)),
                None => errors.push(Error::new("-I needs a directory")),
            }
        } else if arg.starts_with("--proto_path") {
            match value("--proto_path") {
                Some(d) => a.includes.push(PathBuf::from(d)),
                None => errors.push(Error::new("--proto_path needs a directory")),
            }
        } else if arg.starts_with("--python_out") {
            match value("--python_out") {
                Some(d) => a.python_out = Some(PathBuf::from(d)),
                None => errors.push(Error::new("--python_out needs a directory")),
            }
        } else if arg.starts_with("--go_out") {
            match value("--go_out") {
                Some(d) => a.go_out = Some(PathBuf::from(d)),
                None => errors.push(Error::new("--go_out needs a directory")),
            }
        } else if arg.starts_with("--go_opt") {
            match value("--go_opt") {
                Some(v) => a.go.params.push(v),
                None => errors.push(Error::new("--go_opt needs a value")),
            }
        } else if arg.starts_with("--go_plugin") {
            match value("--go_plugin") {
                Some(v) => a.go.plugin = Some(PathBuf::from(v)),
                None => errors.push(Error::new("--go_plugin needs a path")),
            }
        } else if arg.starts_with("--descriptor_set_out") {
            match value("--descriptor_set_out") {
                Some(d) => a.descriptor_set_out = Some(PathBuf::from(d)),
                None => errors.push(Error::new("--descriptor_set_out needs a file")),
            }
        } else if arg.starts_with("--deadline") {
            match value("--deadline") {
                Some(v) => {
                    if let Err(e) = a.overrides.add_flag(&v) {
                        errors.push(e);
                    }
                }
                None => errors.push(Error::new("--deadline needs SERVICE[/METHOD]=DURATION")),
            }
        } else if arg.starts_with("--courier_options") {
            match value("--courier_options") {
                Some(v) => option_files.push(PathBuf::from(v)),
                None => errors.push(Error::new("--courier_options needs a file")),
            }
        } else if arg.starts_with('-') && arg != "-" {
            errors.push(Error::new(format!("unknown option {arg:?}")).with_help("see courier-stubgen --help"));
        } else {
            a.files.push(PathBuf::from(arg));
        }
    }
    // Command-line deadlines win over the options files: read the files first.
    if !option_files.is_empty() {
        let mut merged = DeadlineOverrides::default();
        for f in &option_files {
            if let Err(es) = merged.add_file(f) {
                errors.extend(es);
            }
        }
        merged.extend(std::mem::take(&mut a.overrides));
        a.overrides = merged;
    }
    if a.includes.is_empty() {
        a.includes.push(PathBuf::from("."));
    }
    if errors.is_empty() {
        Ok(a)
    } else {
        Err(errors)
    }
}

/// Runs the generator; returns the files written (paths).
pub fn run(args: &Args) -> Result<Vec<PathBuf>, Vec<Error>> {
    if args.files.is_empty() {
        return Err(vec![Error::new("no input files").with_help("usage: courier-stubgen -I DIR --python_out=OUT a.proto ...")]);
    }
    if args.python_out.is_none() && args.go_out.is_none() && args.descriptor_set_out.is_none() {
        return Err(vec![Error::new("no output: give --python_out=DIR (or --descriptor_set_out=FILE)")]);
    }
    let compiled = crate::compile(&args.includes, &args.files)?;
    let model = crate::model::build(&compiled, &args.overrides)?;
    let mut written = Vec::new();
    if let Some(out) = &args.python_out {
        for f in crate::python::generate(&compiled, &model)? {
            let path = out.join(&f.path);
            write(&path, f.content.as_bytes())?;
            written.push(path);
        }
    }
    if let Some(out) = &args.go_out {
        for f in crate::go::generate(&compiled, &model, &args.go)? {
            let path = out.join(&f.path);
            write(&path, f.content.as_bytes())?;
            written.push(path);
        }
    }
    if let Some(path) = &args.descriptor_set_out {
        write(path, &compiled.encode_file_descriptor_set())?;
        written.push(path.clone());
    }
    Ok(written)
}

fn write(path: &std::path::Path, data: &[u8]) -> Result<(), Vec<Error>> {
    let io = |e: std::io::Error| vec![Error::new(format!("cannot write {}: {e}", path.display()))];
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, data).map_err(io)
}

/// The whole command: exit code and what to print on stdout and stderr.
pub fn main_with_args(args: &[String]) -> (i32, String, String) {
    let parsed = match parse(args) {
        Ok(a) => a,
        // Errors in an options file are bad input (1); the rest is usage (2).
        Err(es) => return (if es.iter().all(|e| e.file.is_some()) { 1 } else { 2 }, String::new(), render(&es)),
    };
    if parsed.help {
        return (0, format!("{USAGE}\n"), String::new());
    }
    if parsed.version {
        return (0, format!("courier-stubgen {}\n", env!("CARGO_PKG_VERSION")), String::new());
    }
    // Bad input must never crash the generator: a panic is a bug, reported as one.
    let r = std::panic::catch_unwind(|| run(&parsed));
    match r {
        Ok(Ok(_)) => (0, String::new(), String::new()),
        Ok(Err(es)) => (1, String::new(), render(&es)),
        Err(p) => {
            let what = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default();
            (70, String::new(), format!("courier-stubgen: internal error (a bug, please report it): {what}\n"))
        }
    }
}

fn render(errors: &[Error]) -> String {
    let mut s = String::new();
    for e in errors {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    s
}
