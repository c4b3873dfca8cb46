//! Tracing: W3C trace context (`traceparent`/`tracestate`) and a span per
//! client and server call, exported over OTLP (gRPC) in batches.
//!
//! Off until [`init`]: then the hot path does one relaxed load and nothing
//! else. On, a call is sampled when its caller's `traceparent` says so, and a
//! call without one (a root) with probability [`TraceConfig::sampling_ratio`].
//! Unsampled roots still get a `traceparent` (flag `00`) so that the calls
//! they make downstream follow the same decision.
//!
//! Propagation needs no plumbing in the bindings: the server rewrites a
//! sampled call's `traceparent` to name its server span before the ctx is
//! built, the ctx forwards it on outgoing calls, and the client span made
//! there is the child of the server span (and the parent of the next hop's).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status as OtelStatus, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context as OtelContext, KeyValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use crate::context::{Ctx, Identity};
use crate::method::MethodDesc;
use crate::status::Code;

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// Tracing settings.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317` (Jaeger, an OTel collector).
    pub otlp_endpoint: String,
    /// `service.name` of the spans of this process.
    pub service_name: String,
    /// Probability that a call without a sampled parent starts a trace (0..=1).
    pub sampling_ratio: f64,
    /// Spans kept while the exporter is behind; more are dropped (and counted).
    pub max_queue_size: usize,
    /// Spans per export request.
    pub max_export_batch_size: usize,
    /// Longest wait before a partial batch is sent.
    pub scheduled_delay: Duration,
    /// Deadline of one export request.
    pub export_timeout: Duration,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            otlp_endpoint: "http://127.0.0.1:4317".into(),
            service_name: "courier".into(),
            sampling_ratio: 0.01,
            max_queue_size: 2048,
            max_export_batch_size: 512,
            scheduled_delay: Duration::from_secs(1),
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// Tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("invalid tracing config: {0}")]
    Config(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

struct State {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// A root is sampled when a random u64 is below this (ratio × 2^64).
static THRESHOLD: AtomicU64 = AtomicU64::new(0);
static STATE: RwLock<Option<Arc<State>>> = RwLock::new(None);
static SPANS_STARTED: AtomicU64 = AtomicU64::new(0);

/// True once [`init`] ran (and until [`shutdown`]).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Spans started by this process since tracing was enabled.
pub fn spans_started() -> u64 {
    SPANS_STARTED.load(Relaxed)
}

/// The sampling ratio in force (0 when tracing is off).
pub fn sampling_ratio() -> f64 {
    if !enabled() {
        return 0.0;
    }
    THRESHOLD.load(Relaxed) as f64 / u64::MAX as f64
}

/// Forwards exports to the client runtime: the tonic exporter needs a Tokio
/// reactor, the batch processor's thread has none.
#[derive(Debug)]
struct OnRuntime<E>(Arc<E>);

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let e = self.0.clone();
        let task = crate::client::client_runtime().spawn(async move { e.export(batch).await });
        async move { task.await.map_err(|e| OTelSdkError::InternalFailure(e.to_string()))? }
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        if let Some(e) = Arc::get_mut(&mut self.0) {
            e.set_resource(resource);
        }
    }
}

/// Turns tracing on for this process (again: replaces the previous setup,
/// flushing it first).
pub fn init(config: TraceConfig) -> Result<(), TraceError> {
    use opentelemetry_otlp::WithExportConfig;
    if !(0.0..=1.0).contains(&config.sampling_ratio) || config.sampling_ratio.is_nan() {
        return Err(TraceError::Config(format!("sampling_ratio must be within 0..=1, got {}", config.sampling_ratio)));
    }
    if config.otlp_endpoint.is_empty() {
        return Err(TraceError::Config("otlp_endpoint is empty".into()));
    }
    let exporter = {
        let _g = crate::client::client_runtime().enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| TraceError::Exporter(e.to_string()))?
    };
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(config.max_queue_size.max(1))
        .with_max_export_batch_size(config.max_export_batch_size.clamp(1, config.max_queue_size.max(1)))
        .with_scheduled_delay(config.scheduled_delay)
        .build();
    let processor = BatchSpanProcessor::builder(OnRuntime(Arc::new(exporter))).with_batch_config(batch).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
        .build();
    let tracer = provider.tracer("courier");
    let threshold = if config.sampling_ratio >= 1.0 { u64::MAX } else { (config.sampling_ratio * u64::MAX as f64) as u64 };
    let old = STATE.write().unwrap_or_else(|e| e.into_inner()).replace(Arc::new(State { provider, tracer }));
    THRESHOLD.store(threshold, Relaxed);
    ENABLED.store(true, Relaxed);
    if let Some(old) = old {
        let _ = old.provider.shutdown();
    }
    Ok(())
}

/// Sends every finished span now (blocks until the exporter answered).
pub fn flush() {
    let st = STATE.read().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(st) = st {
        let _ = st.provider.force_flush();
    }
}

/// Flushes and turns tracing off.
pub fn shutdown() {
    ENABLED.store(false, Relaxed);
    let st = STATE.write().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(st) = st {
        let _ = st.provider.shutdown();
    }
}

fn tracer() -> Option<Arc<State>> {
    STATE.read().unwrap_or_else(|e| e.into_inner()).clone()
}

// ---------------------------------------------------------------------------
// W3C trace context

/// A parsed `traceparent` header (version 00).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceParent {
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Parses `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids and version ff are
    /// invalid. Later versions are read by their version-00 prefix, as the
    /// spec asks.
    pub fn parse(v: &[u8]) -> Option<TraceParent> {
        if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        let (ver, tid, pid, fl) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' || ver == b"ff" || (ver == b"00" && v.len() != 55) {
            return None;
        }
        let hex = |s: &[u8]| -> Option<u128> {
            let mut n: u128 = 0;
            for &c in s {
                let d = match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    _ => return None,
                };
                n = (n << 4) | u128::from(d);
            }
            Some(n)
        };
        hex(ver)?;
        let trace_id = hex(tid)?;
        let parent_id = hex(pid)? as u64;
        let flags = hex(fl)? as u8;
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        Some(TraceParent { trace_id, parent_id, flags })
    }

    /// `00-<trace id>-<parent id>-<flags>` (formatted by hand: this runs on
    /// every call of a root when tracing is on).
    pub fn to_header(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut b = [b'-'; 55];
        b[0] = b'0';
        b[1] = b'0';
        for i in 0..32 {
            b[3 + i] = HEX[((self.trace_id >> (124 - 4 * i)) & 0xf) as usize];
        }
        for i in 0..16 {
            b[36 + i] = HEX[((self.parent_id >> (60 - 4 * i)) & 0xf) as usize];
        }
        b[53] = HEX[usize::from(self.flags >> 4)];
        b[54] = HEX[usize::from(self.flags & 0xf)];
        HeaderValue::from_bytes(&b).expect("hex is a valid header value")
    }
}

/// The trace id and span id a ctx's outgoing calls will name as parent
/// (from its `traceparent`), as hex; `None` without trace context.
pub fn ctx_trace_ids(ctx: &Ctx) -> Option<(String, String, bool)> {
    let tp = TraceParent::parse(ctx.metadata().get(&TRACEPARENT)?.as_bytes())?;
    Some((format!("{:032x}", tp.trace_id), format!("{:016x}", tp.parent_id), tp.sampled()))
}

fn rand_u64() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static S: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
            h.finish() | 1
        });
    }
    S.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545F4914F6CDD1D)
    })
}

fn sample_root() -> bool {
    let t = THRESHOLD.load(Relaxed);
    t == u64::MAX || rand_u64() < t
}

fn nonzero_u64() -> u64 {
    loop {
        let v = rand_u64();
        if v != 0 {
            return v;
        }
    }
}

/// Decides for one call: `Ok(parent)` when it is sampled (with its remote
/// parent, if any), `Err(())` when not (an unsampled root gets a `traceparent`
/// with flag 00 so the hops below it agree).
fn decide(headers: &mut HeaderMap) -> Result<Option<(TraceParent, TraceState)>, ()> {
    match headers.get(&TRACEPARENT).and_then(|v| TraceParent::parse(v.as_bytes())) {
        Some(p) if p.sampled() => {
            let state = headers
                .get(&TRACESTATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<TraceState>().ok())
                .unwrap_or_default();
            Ok(Some((p, state)))
        }
        Some(_) => Err(()),
        None => {
            if sample_root() {
                Ok(None)
            } else {
                let tp = TraceParent { trace_id: (u128::from(nonzero_u64()) << 64) | u128::from(rand_u64()), parent_id: nonzero_u64(), flags: 0 };
                headers.insert(TRACEPARENT.clone(), tp.to_header());
                Err(())
            }
        }
    }
}

fn start_span(
    st: &State,
    kind: SpanKind,
    desc: &MethodDesc,
    parent: Option<(TraceParent, TraceState)>,
    mut attrs: Vec<KeyValue>,
    headers: &mut HeaderMap,
) -> opentelemetry_sdk::trace::Span {
    let parent_cx = match parent {
        Some((p, state)) => OtelContext::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(p.trace_id.to_be_bytes()),
            SpanId::from_bytes(p.parent_id.to_be_bytes()),
            TraceFlags::SAMPLED,
            true,
            state,
        )),
        None => OtelContext::new(),
    };
    attrs.push(KeyValue::new("rpc.system", "grpc"));
    attrs.push(KeyValue::new("rpc.service", desc.service().to_string()));
    attrs.push(KeyValue::new("rpc.method", desc.name().to_string()));
    let span = st
        .tracer
        .span_builder(format!("{}/{}", desc.service(), desc.name()))
        .with_kind(kind)
        .with_attributes(attrs)
        .start_with_context(&st.tracer, &parent_cx);
    let sc = span.span_context();
    let tp = TraceParent {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        parent_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        flags: 1,
    };
    headers.insert(TRACEPARENT.clone(), tp.to_header());
    SPANS_STARTED.fetch_add(1, Relaxed);
    span
}

fn end_span(mut span: opentelemetry_sdk::trace::Span, code: Code, extra: Vec<KeyValue>) {
    span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
    span.set_attributes(extra);
    if code != Code::Ok {
        span.set_status(OtelStatus::error(code.name()));
    }
    span.end();
}

/// The span of one server call (only for sampled calls).
pub struct ServerSpan(opentelemetry_sdk::trace::Span);

impl ServerSpan {
    /// `headers`: the request's; a sampled call's `traceparent` is replaced by
    /// one naming this span (the ctx built from them forwards it).
    pub(crate) fn start(desc: &MethodDesc, peer: Option<&Identity>, headers: &mut HeaderMap) -> Option<ServerSpan> {
        if !enabled() {
            return None;
        }
        let parent = decide(headers).ok()?;
        let st = tracer()?;
        let peer = peer.map_or(crate::stats::UNAUTHENTICATED_LABEL.to_string(), |p| p.name.clone());
        let attrs = vec![KeyValue::new("courier.peer_identity", peer)];
        Some(ServerSpan(start_span(&st, SpanKind::Server, desc, parent, attrs, headers)))
    }

    pub(crate) fn end(self, code: Code, ctx: Option<&Ctx>) {
        let mut extra = Vec::new();
        if let Some(ctx) = ctx {
            extra.push(KeyValue::new("courier.request_id", ctx.request_id().to_string()));
            if let Some(q) = ctx.queue_wait() {
                extra.push(KeyValue::new("courier.queue_wait_ms", q.as_secs_f64() * 1e3));
            }
        }
        end_span(self.0, code, extra);
    }
}

/// The span of one client call (only for sampled calls).
pub struct ClientSpan(opentelemetry_sdk::trace::Span);

impl ClientSpan {
    /// `headers`: the outgoing ones (with the ctx's `traceparent`, if any);
    /// a sampled call's `traceparent` is set to name this span.
    pub(crate) fn start(desc: &MethodDesc, target: &str, headers: &mut HeaderMap) -> Option<ClientSpan> {
        if !enabled() {
            return None;
        }
        let parent = decide(headers).ok()?;
        let st = tracer()?;
        let attrs = vec![KeyValue::new("server.address", target.to_string())];
        Some(ClientSpan(start_span(&st, SpanKind::Client, desc, parent, attrs, headers)))
    }

    pub(crate) fn end(self, code: Code) {
        end_span(self.0, code, Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parses_and_formats() {
        let s = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = TraceParent::parse(s).unwrap();
        assert!(p.sampled());
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.parent_id, 0x00f067aa0ba902b7);
        assert_eq!(p.to_header().as_bytes(), s);
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
        // A future version with extra fields is read by its prefix.
        assert!(TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what").is_some());
    }

    #[test]
    fn disabled_tracing_touches_nothing() {
        let d = MethodDesc::new("/t.S/M", crate::method::MethodKind::Unary, crate::method::DeadlinePolicy::NoDeadline).unwrap();
        let mut h = HeaderMap::new();
        if !enabled() {
            assert!(ServerSpan::start(&d, None, &mut h).is_none());
            assert!(h.is_empty());
        }
    }
}
