//! A user-space emulation of a long, fat network link for the high-BDP benchmark,
//! for kernels without `sch_netem` (this machine's has none, so `tc qdisc ...
//! netem delay 50ms` fails with "Specified qdisc kind is unknown").
//!
//! `delay-link --port 0 --to 127.0.0.1:PORT --delay-ms 50 --rate-mbit 400`
//! accepts TCP connections and relays each to `--to`; every chunk read on one
//! side is written to the other `--delay-ms` later (one way, so the round trip
//! is twice that), and each direction drains at most `--rate-mbit` (a
//! serialisation queue, like a router's egress). What is in flight per
//! direction is bounded by `--buffer-kb` (default: twice the one-way delay's
//! bytes at the link rate, i.e. one round trip's: the delay line holds half of
//! it, the queue in front of it the other half, at most one more one-way delay
//! of queueing): beyond it the relay stops reading and TCP pushes back on the
//! sender. End of stream is relayed each way on its own (a half-close arrives
//! after the data before it, one delay later).
//!
//! What it models: the end-to-end windows of a protocol above TCP. An HTTP/2
//! window must cover the round trip's bytes, as over a real 100 ms link. What it
//! does not: TCP's own window growth over the delay (each leg of the relay is
//! local), so a plain TCP stream through it (iperf3) reaches the link rate, the
//! upper bound the benchmark compares against. Timers tick in milliseconds, so
//! a round trip takes about 2 x delay + 2 ms. Prints `PORT <n>`, and the
//! settings on stderr.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use courier_bench::{announce_port, arg_value, port_arg, usage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio::time::Instant;

#[derive(Clone, Copy)]
struct Link {
    delay: Duration,
    /// Bytes per second each direction drains at.
    rate: f64,
    buffer: usize,
}

fn main() {
    let port = port_arg();
    let to = arg_value("--to").unwrap_or_else(|| usage("--to HOST:PORT is required"));
    let num = |name: &str, default: f64| -> f64 {
        arg_value(name).map(|v| v.parse().unwrap_or_else(|_| usage(&format!("{name} takes a number")))).unwrap_or(default)
    };
    let delay = Duration::from_secs_f64(num("--delay-ms", 50.0) / 1000.0);
    let rate = num("--rate-mbit", 400.0) * 1e6 / 8.0;
    if rate <= 0.0 {
        usage("--rate-mbit must be positive");
    }
    let bdp = rate * delay.as_secs_f64();
    let buffer = arg_value("--buffer-kb").map(|_| num("--buffer-kb", 0.0) as usize * 1024).unwrap_or((2.0 * bdp) as usize).max(64 * 1024);
    let link = Link { delay, rate, buffer };
    eprintln!(
        "delay-link: delay {} ms one way, rate {} Mbit/s, buffer {buffer} bytes per direction",
        delay.as_secs_f64() * 1e3,
        rate * 8.0 / 1e6
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap_or_else(|e| usage(&e.to_string()));
        announce_port(listener.local_addr().expect("addr").port());
        loop {
            let down = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // E.g. out of descriptors: wait instead of spinning on the error.
                    eprintln!("delay-link: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let to = to.clone();
            tokio::spawn(async move {
                let up = match TcpStream::connect(&to).await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("delay-link: connect {to}: {e}");
                        return;
                    }
                };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                tokio::join!(direction(dr, uw, link), direction(ur, dw, link));
            });
        }
    });
}

/// Chunks in flight in one direction, each with the time it may leave.
struct Pipe {
    chunks: Mutex<VecDeque<(Instant, Vec<u8>)>>,
    ready: Notify,
    /// Free bytes of the link's buffer.
    room: Semaphore,
}

async fn direction(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, link: Link) {
    let pipe = Arc::new(Pipe { chunks: Mutex::new(VecDeque::new()), ready: Notify::new(), room: Semaphore::new(link.buffer) });
    let reader = {
        let pipe = pipe.clone();
        async move {
            // When the link's serialiser is free again: chunks leave in order at `rate`.
            let mut free_at = Instant::now();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => 0,
                    Ok(n) => n,
                };
                if n > 0 {
                    let Ok(permit) = pipe.room.acquire_many(n as u32).await else { return };
                    permit.forget();
                }
                let now = Instant::now();
                free_at = free_at.max(now) + Duration::from_secs_f64(n as f64 / link.rate);
                pipe.chunks.lock().await.push_back((free_at + link.delay, buf[..n].to_vec()));
                pipe.ready.notify_one();
                if n == 0 {
                    // End of stream travels the link too (an empty chunk).
                    return;
                }
            }
        }
    };
    let writer = async move {
        loop {
            let next = pipe.chunks.lock().await.pop_front();
            let Some((at, chunk)) = next else {
                pipe.ready.notified().await;
                continue;
            };
            tokio::time::sleep_until(at).await;
            if chunk.is_empty() {
                let _ = to.shutdown().await;
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                pipe.room.close();
                return;
            }
            pipe.room.add_permits(chunk.len());
        }
    };
    tokio::join!(reader, writer);
}
