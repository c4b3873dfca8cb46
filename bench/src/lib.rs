//! Shared bits of the benchmark servers: argument parsing, the method path,
//! the request every server answers.

use std::io::Write;

/// The one method every benchmark server serves.
pub const METHOD: &str = "/bench.Echo/Echo";

/// The server-streaming method of `courier-echo`: the request message sent
/// back again and again until the client cancels.
pub const STREAM_METHOD: &str = "/bench.Echo/Stream";

/// `Req{s: "hello, world!"}` (field 1, string) as a protobuf message: 15 bytes.
pub const REQ_MESSAGE: &[u8] = b"\x0a\x0dhello, world!";

/// The gRPC frame of [`REQ_MESSAGE`]: 5-byte prefix + message, 20 bytes.
pub fn request_frame() -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(REQ_MESSAGE.len() as u32).to_be_bytes());
    v.extend_from_slice(REQ_MESSAGE);
    v
}

/// A protobuf message of exactly `size` bytes (at least 3): one length-delimited
/// field `field` (1: `string s` of `Req`/`TestRequest`, 2: `bytes payload` of
/// `TestRequest`/`TestResponse`) filled with 'x'.
pub fn message(field: u32, size: usize) -> Vec<u8> {
    assert!(size >= 3 && field < 16, "message of {size} bytes, field {field}");
    let varint_len = |v: usize| if v < 1 << 7 { 1 } else if v < 1 << 14 { 2 } else if v < 1 << 21 { 3 } else { 4 };
    // tag (1 byte) + varint(len) + len == size
    let mut len = size - 2;
    while 1 + varint_len(len) + len > size {
        len -= 1;
    }
    let mut v = Vec::with_capacity(size);
    v.push((field << 3 | 2) as u8);
    let mut n = len;
    while n >= 0x80 {
        v.push((n as u8) | 0x80);
        n >>= 7;
    }
    v.push(n as u8);
    v.resize(size, b'x');
    v
}

/// `message` in a gRPC frame (5-byte prefix).
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(msg.len() + 5);
    v.push(0);
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
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
