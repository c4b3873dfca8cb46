//! The gRPC wire format over HTTP/2: length-prefixed message frames and the
//! `grpc-timeout` header, exactly as the gRPC HTTP/2 protocol spec defines them.
//!
//! The core moves message bytes as [`Bytes`] and never decodes them: a frame that
//! arrives in one chunk is handed on as a slice of that chunk, without a copy.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::status::Status;

/// Length of the frame prefix: compressed flag (1 byte) + big-endian length (4 bytes).
pub const PREFIX_LEN: usize = 5;

/// Default largest message a server or client accepts: 4 MiB, as in gRPC.
pub const DEFAULT_MAX_RECV_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Incremental decoder of length-prefixed messages from a stream of chunks.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    /// The chunk being read when `buf` is empty: lets whole frames be sliced out
    /// of it without copying.
    chunk: Bytes,
    max_message_size: usize,
}

impl FrameDecoder {
    pub fn new(max_message_size: usize) -> FrameDecoder {
        FrameDecoder { buf: BytesMut::new(), chunk: Bytes::new(), max_message_size }
    }

    /// Adds a chunk of body data.
    pub fn push(&mut self, data: Bytes) {
        if self.buf.is_empty() && self.chunk.is_empty() {
            self.chunk = data;
        } else {
            if !self.chunk.is_empty() {
                let chunk = std::mem::take(&mut self.chunk);
                self.buf.extend_from_slice(&chunk);
            }
            self.buf.extend_from_slice(&data);
        }
    }

    /// The next complete message, `Ok(None)` when more data is needed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.chunk.is_empty() && self.buf.is_empty() {
            return Ok(None);
        }
        if !self.chunk.is_empty() {
            match self.parse_header(&self.chunk[..])? {
                Some(len) if self.chunk.len() >= PREFIX_LEN + len => {
                    self.chunk.advance(PREFIX_LEN);
                    return Ok(Some(self.chunk.split_to(len)));
                }
                Some(_) | None => {
                    // Incomplete: fall back to the buffer (copy once).
                    let chunk = std::mem::take(&mut self.chunk);
                    self.buf.extend_from_slice(&chunk);
                }
            }
        }
        match self.parse_header(&self.buf[..])? {
            Some(len) if self.buf.len() >= PREFIX_LEN + len => {
                self.buf.advance(PREFIX_LEN);
                Ok(Some(self.buf.split_to(len).freeze()))
            }
            _ => Ok(None),
        }
    }

    /// Checks the end of the stream: leftover bytes mean a truncated frame.
    pub fn finish(&self) -> Result<(), Status> {
        let left = self.buf.len() + self.chunk.len();
        if left == 0 {
            Ok(())
        } else {
            Err(Status::internal(format!("stream ended inside a message frame ({left} bytes of an incomplete frame)")))
        }
    }

    fn parse_header(&self, b: &[u8]) -> Result<Option<usize>, Status> {
        if b.len() < PREFIX_LEN {
            return Ok(None);
        }
        match b[0] {
            0 => {}
            1 => {
                return Err(Status::internal(
                    "compressed flag set on a message but no grpc-encoding was negotiated",
                ))
            }
            f => return Err(Status::internal(format!("invalid message frame flag {f:#04x}"))),
        }
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        if len > self.max_message_size {
            return Err(Status::resource_exhausted(format!(
                "received message larger than max ({len} vs. {})",
                self.max_message_size
            )));
        }
        Ok(Some(len))
    }
}

/// Messages above this size are sent as prefix + the caller's buffer (two chunks,
/// no copy); smaller ones are copied into one chunk, which is cheaper than an
/// extra HTTP/2 frame.
const COPY_THRESHOLD: usize = 8 * 1024;

/// Frames one message. Returns one or two chunks to write in order.
pub fn encode_message(msg: Bytes) -> (Bytes, Option<Bytes>) {
    let mut prefix = [0u8; PREFIX_LEN];
    prefix[1..].copy_from_slice(&(msg.len() as u32).to_be_bytes());
    if msg.len() <= COPY_THRESHOLD {
        let mut b = BytesMut::with_capacity(PREFIX_LEN + msg.len());
        b.put_slice(&prefix);
        b.put_slice(&msg);
        (b.freeze(), None)
    } else {
        (Bytes::copy_from_slice(&prefix), Some(msg))
    }
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit
/// (`H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds).
pub fn parse_grpc_timeout(v: &[u8]) -> Result<Duration, String> {
    let show = || String::from_utf8_lossy(v).into_owned();
    let (&unit, digits) = v.split_last().ok_or_else(|| "empty grpc-timeout".to_string())?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("malformed grpc-timeout {:?}: expected 1 to 8 digits and a unit", show()));
    }
    let n: u64 = digits.iter().fold(0, |acc, d| acc * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(format!("malformed grpc-timeout {:?}: unknown unit {:?}", show(), unit as char)),
    })
}

/// Formats a `grpc-timeout` value with the finest unit whose value fits in 8
/// digits, rounding up so the peer never sees a shorter budget than ours.
pub fn format_grpc_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (per, unit) in units {
        let v = nanos.div_ceil(per);
        if v <= MAX {
            return format!("{v}{unit}");
        }
    }
    format!("{MAX}H")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;

    fn frame(flag: u8, msg: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    #[test]
    fn whole_frames_are_sliced_without_copy() {
        let mut wire = frame(0, b"hello");
        wire.extend(frame(0, b""));
        wire.extend(frame(0, b"world!"));
        let chunk = Bytes::from(wire);
        let base = chunk.as_ptr() as usize;
        let mut d = FrameDecoder::new(100);
        d.push(chunk);
        let a = d.next_message().unwrap().unwrap();
        assert_eq!(&a[..], b"hello");
        assert_eq!(a.as_ptr() as usize, base + PREFIX_LEN, "sliced, not copied");
        assert_eq!(&d.next_message().unwrap().unwrap()[..], b"");
        assert_eq!(&d.next_message().unwrap().unwrap()[..], b"world!");
        assert_eq!(d.next_message().unwrap(), None);
        d.finish().unwrap();
    }

    #[test]
    fn frames_split_across_chunks_at_every_point() {
        let mut wire = frame(0, b"abcdefgh");
        wire.extend(frame(0, b"xyz"));
        for cut in 0..=wire.len() {
            for cut2 in cut..=wire.len() {
                let mut d = FrameDecoder::new(100);
                let mut out = vec![];
                for part in [&wire[..cut], &wire[cut..cut2], &wire[cut2..]] {
                    d.push(Bytes::copy_from_slice(part));
                    while let Some(m) = d.next_message().unwrap() {
                        out.push(m);
                    }
                }
                assert_eq!(out, vec![Bytes::from_static(b"abcdefgh"), Bytes::from_static(b"xyz")]);
                d.finish().unwrap();
            }
        }
    }

    #[test]
    fn truncated_frame_is_an_error_at_finish() {
        let wire = frame(0, b"abcdefgh");
        let mut d = FrameDecoder::new(100);
        d.push(Bytes::copy_from_slice(&wire[..7]));
        assert_eq!(d.next_message().unwrap(), None);
        assert_eq!(d.finish().unwrap_err().code(), Code::Internal);
    }

    #[test]
    fn compressed_flag_and_bad_flag_and_oversize_are_refused() {
        let mut d = FrameDecoder::new(100);
        d.push(Bytes::from(frame(1, b"zz")));
        let e = d.next_message().unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(e.message().contains("compressed"));

        let mut d = FrameDecoder::new(100);
        d.push(Bytes::from(frame(7, b"zz")));
        assert_eq!(d.next_message().unwrap_err().code(), Code::Internal);

        let mut d = FrameDecoder::new(4);
        d.push(Bytes::from(frame(0, b"12345")));
        let e = d.next_message().unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(e.message().contains("5 vs. 4"), "{}", e.message());
    }

    #[test]
    fn encode_small_and_large() {
        let (a, b) = encode_message(Bytes::from_static(b"hi"));
        assert_eq!(&a[..], &frame(0, b"hi")[..]);
        assert!(b.is_none());
        let big = Bytes::from(vec![7u8; COPY_THRESHOLD + 1]);
        let (a, b) = encode_message(big.clone());
        assert_eq!(a.len(), PREFIX_LEN);
        assert_eq!(a[0], 0);
        assert_eq!(u32::from_be_bytes(a[1..5].try_into().unwrap()) as usize, big.len());
        assert_eq!(b.unwrap().as_ptr(), big.as_ptr());
    }

    #[test]
    fn grpc_timeout_every_unit() {
        let cases: [(&str, Duration); 7] = [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("40m", Duration::from_millis(40)),
            ("500u", Duration::from_micros(500)),
            ("99999999n", Duration::from_nanos(99_999_999)),
            ("0m", Duration::ZERO),
        ];
        for (s, d) in cases {
            assert_eq!(parse_grpc_timeout(s.as_bytes()), Ok(d), "{s}");
        }
    }

    #[test]
    fn grpc_timeout_garbage_is_refused() {
        for bad in ["", "S", "123456789S", "10", "10s", "1.5S", "-1S", " 1S", "1 S", "abcS", "10x", "１S"] {
            assert!(parse_grpc_timeout(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        assert!(parse_grpc_timeout(b"12345678H").is_ok(), "8 digits is the limit, not over it");
    }

    #[test]
    fn grpc_timeout_format_picks_finest_fitting_unit_and_rounds_up() {
        assert_eq!(format_grpc_timeout(Duration::from_nanos(5)), "5n");
        assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(1)), "1000000u");
        assert_eq!(format_grpc_timeout(Duration::from_nanos(100_000_001)), "100001u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(3600 * 24 * 365)), "31536000S");
        assert_eq!(format_grpc_timeout(Duration::from_secs(3600 * 24 * 365 * 200)), "105120000M".replace("105120000M", "1752000H"));
        assert_eq!(format_grpc_timeout(Duration::from_secs(u64::MAX / 4)), "99999999H");
        for d in [Duration::from_nanos(1), Duration::from_millis(1234), Duration::from_secs(86_400)] {
            let back = parse_grpc_timeout(format_grpc_timeout(d).as_bytes()).unwrap();
            assert!(back >= d && back - d < d / 1000 + Duration::from_nanos(1), "{d:?} -> {back:?}");
        }
    }
}
