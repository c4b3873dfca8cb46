//! Shared bits of the benchmark servers: argument parsing, the method path,
//! the request every server answers.

use std::io::Write;

/// The one method every benchmark server serves.
pub const METHOD: &str = "/bench.Echo/Echo";

/// `Req{s: "hello, world!"}` (field 1, string) as a protobuf message: 15 bytes.
pub const REQ_MESSAGE: &[u8] = b"\x0a\x0dhello, world!";

/// The gRPC frame of [`REQ_MESSAGE`]: 5-byte prefix + message, 20 bytes.
pub fn request_frame() -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(REQ_MESSAGE.len() as u32).to_be_bytes());
    v.extend_from_slice(REQ_MESSAGE);
    v
}

/// The value after `--name` (or `--name=value`), if given.
pub fn arg_value(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let eq = format!("{name}=");
    for (i, a) in args.iter().enumerate() {
        if a == name {
            return Some(args.get(i + 1).cloned().unwrap_or_else(|| usage(&format!("{name} needs a value"))));
        }
        if let Some(v) = a.strip_prefix(&eq) {
            return Some(v.to_string());
        }
    }
    None
}

pub fn has_flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// `--port N` (default 0: any free port).
pub fn port_arg() -> u16 {
    arg_value("--port").map(|p| p.parse().unwrap_or_else(|_| usage("--port takes a number"))).unwrap_or(0)
}

pub fn usage(why: &str) -> ! {
    eprintln!("{}: {why}", std::env::args().next().unwrap_or_default());
    std::process::exit(2)
}

/// The line the harness waits for.
pub fn announce_port(port: u16) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "PORT {port}");
    let _ = out.flush();
}
