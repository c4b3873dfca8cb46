//! W3C trace context through two hops, with tracing on (its own test binary:
//! tracing is per process). Spans go to an OTLP endpoint nobody listens on;
//! the export failing must not disturb the calls. The spans themselves are
//! checked in a real Jaeger by py/tests/test_observability_tracing.py.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use courier_core::trace::TraceParent;
use courier_core::*;
use http::{HeaderMap, HeaderValue};

fn desc(path: &str) -> MethodDesc {
    MethodDesc::new(path, MethodKind::Unary, DeadlinePolicy::Default(Duration::from_secs(5))).unwrap()
}

fn tp(ctx: &Ctx) -> Option<TraceParent> {
    TraceParent::parse(ctx.metadata().get("traceparent")?.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_crosses_two_hops() {
    courier_core::trace::init(courier_core::trace::TraceConfig {
        otlp_endpoint: "http://127.0.0.1:9".into(),
        service_name: "trace-test".into(),
        sampling_ratio: 0.0,
        scheduled_delay: Duration::from_millis(50),
        export_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .unwrap();
    let seen: Arc<Mutex<Vec<(&'static str, Option<TraceParent>)>>> = Arc::default();

    // hop 2: records what it got.
    let s2 = Server::new(ServerConfig { workers: 1, ..Default::default() });
    let seen2 = seen.clone();
    s2.register(
        desc("/trace.test.B/Leaf"),
        Handler::unary(move |ctx: Ctx, req: Bytes| {
            seen2.lock().unwrap().push(("b", tp(&ctx)));
            async move { Ok(req) }
        }),
    )
    .unwrap();
    let a2 = s2.listen("127.0.0.1:0").unwrap().to_string();
    s2.start().unwrap();

    // hop 1: records, then calls hop 2 with its ctx.
    let s1 = Server::new(ServerConfig { workers: 1, ..Default::default() });
    let ch2 = Channel::new(&a2, &ChannelConfig::default()).unwrap();
    let seen1 = seen.clone();
    s1.register(
        desc("/trace.test.A/Mid"),
        Handler::unary(move |ctx: Ctx, req: Bytes| {
            seen1.lock().unwrap().push(("a", tp(&ctx)));
            let ch2 = ch2.clone();
            async move { ch2.unary(&ctx, &desc("/trace.test.B/Leaf"), req, &HeaderMap::new()).await.map(|r| r.message) }
        }),
    )
    .unwrap();
    let a1 = s1.listen("127.0.0.1:0").unwrap().to_string();
    s1.start().unwrap();
    let ch1 = Channel::new(&a1, &ChannelConfig::default()).unwrap();
    let mid = desc("/trace.test.A/Mid");

    // 1. A sampled caller: every hop has the same trace id, and each hop's ctx
    //    names a new span (its server span), not the caller's.
    let root = TraceParent { trace_id: 0x0af7651916cd43dd8448eb211c80319c, parent_id: 0xb7ad6b7169203331, flags: 1 };
    let mut md = HeaderMap::new();
    md.insert("traceparent", root.to_header());
    md.insert("tracestate", HeaderValue::from_static("vendor=x"));
    ch1.unary(&Ctx::background(), &mid, Bytes::from_static(b"1"), &md).await.unwrap();
    {
        let s = std::mem::take(&mut *seen.lock().unwrap());
        let a = s.iter().find(|(h, _)| *h == "a").unwrap().1.unwrap();
        let b = s.iter().find(|(h, _)| *h == "b").unwrap().1.unwrap();
        assert_eq!((a.trace_id, b.trace_id), (root.trace_id, root.trace_id));
        assert!(a.sampled() && b.sampled());
        assert_ne!(a.parent_id, root.parent_id, "hop 1's ctx names its server span");
        assert_ne!(b.parent_id, a.parent_id, "hop 2's ctx names its own server span");
    }

    // 2. An unsampled caller: the decision is kept, the header passes unchanged.
    let off = TraceParent { flags: 0, ..root };
    let mut md = HeaderMap::new();
    md.insert("traceparent", off.to_header());
    ch1.unary(&Ctx::background(), &mid, Bytes::from_static(b"2"), &md).await.unwrap();
    {
        let s = std::mem::take(&mut *seen.lock().unwrap());
        for (_, t) in &s {
            assert_eq!(*t, Some(off));
        }
    }

    // 3. A root with sampling ratio 0: the client starts an unsampled trace
    //    that both hops keep.
    ch1.unary(&Ctx::background(), &mid, Bytes::from_static(b"3"), &HeaderMap::new()).await.unwrap();
    {
        let s = std::mem::take(&mut *seen.lock().unwrap());
        let a = s.iter().find(|(h, _)| *h == "a").unwrap().1.expect("a traceparent was made");
        let b = s.iter().find(|(h, _)| *h == "b").unwrap().1.unwrap();
        assert!(!a.sampled() && !b.sampled());
        assert_eq!(a.trace_id, b.trace_id);
    }
    let started = courier_core::trace::spans_started();
    assert!(started >= 4, "spans of the sampled call: {started}");
    courier_core::trace::shutdown();
    s1.shutdown(Duration::from_secs(1));
    s2.shutdown(Duration::from_secs(1));
}
