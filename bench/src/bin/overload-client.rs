//! Open-loop load at a fixed rate (`--rate` calls/s for `--seconds`), each call
//! with a `--deadline-ms` deadline, against `--target`. Prints one JSON line:
//! offered, served (OK), goodput/s, rejections by code, latency percentiles of
//! served calls. Open loop: calls are sent on schedule whether or not earlier
//! ones returned, as real clients under overload do. With `--closed N`, N
//! loops call back to back instead (measures the server's capacity).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier_bench::{arg_value, usage, METHOD, REQ_MESSAGE};
use courier_core::{Channel, ChannelConfig, Ctx, DeadlinePolicy, MethodDesc, MethodKind};

fn num(name: &str, default: u64) -> u64 {
    arg_value(name).map(|v| v.parse().unwrap_or_else(|_| usage(&format!("{name} takes a number")))).unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let target = arg_value("--target").unwrap_or_else(|| usage("--target HOST:PORT is required"));
    let rate = num("--rate", 600);
    let seconds = num("--seconds", 10);
    let deadline = Duration::from_millis(num("--deadline-ms", 1000));
    let ch = Channel::new(&target, &ChannelConfig::default()).unwrap_or_else(|e| usage(&e.to_string()));
    let desc = MethodDesc::new(METHOD, MethodKind::Unary, DeadlinePolicy::NoDeadline).expect("valid path");
    let served = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let failed = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let closed = num("--closed", 0);
    let total = if closed > 0 { 0 } else { rate * seconds };
    let mut tasks = Vec::with_capacity(total as usize);
    for _ in 0..closed {
        let (ch, desc, served, failed) = (ch.clone(), desc.clone(), served.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < Duration::from_secs(seconds) {
                let t0 = Instant::now();
                let ctx = Ctx::background().with_timeout(deadline);
                match ch.unary(&ctx, &desc, Bytes::from_static(REQ_MESSAGE), &Default::default()).await {
                    Ok(_) => served.lock().unwrap().push(t0.elapsed()),
                    Err(e) => *failed.lock().unwrap().entry(e.code().name().to_string()).or_default() += 1,
                }
            }
        }));
    }
    for i in 0..total {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        let (ch, desc, served, failed) = (ch.clone(), desc.clone(), served.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let ctx = Ctx::background().with_timeout(deadline);
            match ch.unary(&ctx, &desc, Bytes::from_static(REQ_MESSAGE), &Default::default()).await {
                Ok(_) => served.lock().unwrap().push(t0.elapsed()),
                Err(e) => *failed.lock().unwrap().entry(e.code().name().to_string()).or_default() += 1,
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = served.lock().unwrap().clone();
    lat.sort();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let failed = failed.lock().unwrap();
    let failed_json: Vec<String> = failed.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    println!(
        "{{\"offered\": {}, \"served\": {}, \"seconds\": {elapsed:.2}, \"goodput_per_s\": {:.1}, \"p50_ms\": {:.1}, \"p99_ms\": {:.1}, \"max_ms\": {:.1}, \"failed\": {{{}}}}}",
        if closed > 0 { lat.len() as u64 } else { total },
        lat.len(),
        lat.len() as f64 / seconds as f64,
        pct(0.50),
        pct(0.99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        failed_json.join(", ")
    );
}
