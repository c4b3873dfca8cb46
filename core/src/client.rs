//! The client `Channel`: one HTTP/2 connection, multiplexed, connected lazily
//! and re-established after failures; raw message bytes in and out.
//!
//! Built on tonic's client (it costs nothing on this side: the server's hot path
//! is where tonic's layers were measured to cost throughput). Courier adds the
//! deadline rules (earliest of ctx and method default, sent as `grpc-timeout`,
//! enforced locally), ctx propagation (request id, trace context, cancellation)
//! and the boundary rule (statuses from here are marked downstream).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use futures_util::Stream;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;

use crate::context::{Ctx, REQUEST_ID_HEADER, TRACE_HEADERS};
use crate::method::MethodDesc;
use crate::status::Status;
use crate::wire::{format_grpc_timeout, DEFAULT_MAX_RECV_MESSAGE_SIZE};

/// Channel settings.
#[derive(Clone, Debug)]
pub struct ChannelConfig {
    /// Largest response message accepted (default 4 MiB).
    pub max_recv_message_size: usize,
    pub connect_timeout: Duration,
    pub http2_adaptive_window: bool,
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
    /// PING interval on the connection; `None` disables keepalive.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    /// Mutual TLS (`https`, ALPN h2, the server checked by SPIFFE ID); `None`: plaintext.
    pub tls: Option<crate::tls::ClientTls>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            max_recv_message_size: DEFAULT_MAX_RECV_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(20),
            http2_adaptive_window: false,
            initial_stream_window_size: Some(1024 * 1024),
            initial_connection_window_size: Some(2 * 1024 * 1024),
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
            tls: None,
        }
    }
}

/// A channel could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("invalid target {target:?}: {why}")]
    InvalidTarget { target: String, why: String },
}

/// A reply to a unary or client-streaming call.
#[derive(Debug)]
pub struct Reply {
    pub message: Bytes,
    /// Response headers (initial metadata).
    pub headers: HeaderMap,
    /// Response trailers (trailing metadata, `grpc-status` removed).
    pub trailers: HeaderMap,
}

/// A client channel to one target (`host:port`). Cheap to clone; clones share
/// the connection. Usable from any thread, inside or outside an async runtime.
#[derive(Clone)]
pub struct Channel {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
    target: Arc<str>,
    /// This channel's calls in `/rpcz`.
    obs: Arc<crate::stats::ChannelStats>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("target", &self.target).finish()
    }
}

/// The runtime that drives connections of channels made outside any runtime
/// (host-language threads). One thread: clients are I/O-bound. Bindings also
/// run their async calls' futures on it.
pub fn client_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("courier-client")
            .enable_all()
            .build()
            .expect("cannot start the client runtime")
    })
}

/// Spawns connection tasks on the runtime the channel was made on, or on the
/// client runtime when it was made outside any.
#[derive(Clone)]
struct Spawner(tokio::runtime::Handle);

impl<F> hyper::rt::Executor<F> for Spawner
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

fn current_or_client_handle() -> tokio::runtime::Handle {
    tokio::runtime::Handle::try_current().unwrap_or_else(|_| client_runtime().handle().clone())
}

impl Channel {
    /// A channel to `target` (`host:port`; TLS when `config.tls` is set).
    /// Connects on first use; `connect_timeout` bounds TCP and TLS together.
    pub fn new(target: &str, config: &ChannelConfig) -> Result<Channel, ChannelError> {
        let invalid = |why: String| ChannelError::InvalidTarget { target: target.to_string(), why };
        if target.is_empty() || target.contains("://") || target.contains('/') {
            return Err(invalid("expected host:port".into()));
        }
        let handle = current_or_client_handle();
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{target}"))
            .map_err(|e| invalid(e.to_string()))?
            .executor(Spawner(handle.clone()))
            .tcp_nodelay(true)
            .connect_timeout(config.connect_timeout)
            .http2_adaptive_window(config.http2_adaptive_window)
            .initial_stream_window_size(config.initial_stream_window_size)
            .initial_connection_window_size(config.initial_connection_window_size)
            .keep_alive_timeout(config.keepalive_timeout);
        let endpoint = match config.keepalive_interval {
            Some(i) => endpoint.http2_keep_alive_interval(i),
            None => endpoint,
        };
        let channel = {
            let _g = handle.enter();
            match &config.tls {
                // Our own connector: one session cache per channel, SPIFFE checks.
                Some(tls) => endpoint.connect_with_connector_lazy(crate::tls::TlsConnector::new(tls.clone())),
                None => endpoint.connect_lazy(),
            }
        };
        let grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(config.max_recv_message_size)
            .max_encoding_message_size(usize::MAX);
        Ok(Channel { grpc, target: target.into(), obs: crate::stats::ChannelStats::new(target) })
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// A unary call.
    pub async fn unary(&self, ctx: &Ctx, method: &MethodDesc, msg: Bytes, metadata: &HeaderMap) -> Result<Reply, Status> {
        self.client_streaming(ctx, method, futures_util::stream::once(async move { msg }), metadata).await
    }

    /// A client-streaming call: sends every message of `requests`, then waits for the reply.
    pub async fn client_streaming<S>(&self, ctx: &Ctx, method: &MethodDesc, requests: S, metadata: &HeaderMap) -> Result<Reply, Status>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        let mut stream = self.bidi_streaming(ctx, method, requests, metadata).await?;
        let message = stream.message().await?.ok_or_else(|| downstream(Status::internal("server sent no response message")))?;
        if stream.message().await?.is_some() {
            return Err(downstream(Status::internal("server sent more than one response message for a unary call")));
        }
        let ReplyStream { headers, trailers, .. } = stream;
        Ok(Reply { message, headers, trailers: trailers.unwrap_or_default() })
    }

    /// A server-streaming call.
    pub async fn server_streaming(&self, ctx: &Ctx, method: &MethodDesc, msg: Bytes, metadata: &HeaderMap) -> Result<ReplyStream, Status> {
        self.bidi_streaming(ctx, method, futures_util::stream::once(async move { msg }), metadata).await
    }

    /// A bidirectional-streaming call. Resolves once the server sent its headers.
    pub async fn bidi_streaming<S>(&self, ctx: &Ctx, method: &MethodDesc, requests: S, metadata: &HeaderMap) -> Result<ReplyStream, Status>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        let path = PathAndQuery::try_from(method.path()).map_err(|e| Status::internal(format!("bad method path: {e}")))?;
        let deadline = method.effective_deadline(Instant::now(), ctx.deadline());
        let mut headers = outgoing_headers(ctx, deadline, metadata)?;
        let mut obs = crate::stats::ClientCall::start(&self.obs, method, &mut headers);
        let mut req = tonic::Request::new(requests);
        *req.metadata_mut() = MetadataMap::from_headers(headers);
        let mut grpc = self.grpc.clone();
        let start = async move {
            grpc.ready().await.map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
            grpc.streaming(req, path, BytesCodec).await.map_err(from_tonic)
        };
        let resp = bounded(ctx, deadline, start).await.map_err(|s| {
            obs.finish(s.code());
            downstream(s)
        })?;
        let (md, body, _) = resp.into_parts();
        Ok(ReplyStream { inner: body, headers: md.into_headers(), trailers: None, deadline, ctx: ctx.clone(), obs })
    }
}

/// Response messages of a streaming call.
pub struct ReplyStream {
    inner: tonic::Streaming<Bytes>,
    headers: HeaderMap,
    trailers: Option<HeaderMap>,
    deadline: Option<Instant>,
    ctx: Ctx,
    /// Stats and trace span, ended with the call's status.
    obs: crate::stats::ClientCall,
}

impl ReplyStream {
    /// Response headers (initial metadata).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Response trailers, once the stream has ended.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }

    /// The next message; `Ok(None)` at the end of an OK stream.
    pub async fn message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.trailers.is_some() {
            return Ok(None);
        }
        let (ctx, deadline) = (self.ctx.clone(), self.deadline);
        let inner = &mut self.inner;
        let next = bounded(&ctx, deadline, async move {
            inner.message().await.map_err(from_tonic)
        })
        .await
        .map_err(|s| {
            self.obs.finish(s.code());
            downstream(s)
        })?;
        if next.is_none() {
            let t = self.inner.trailers().await.map_err(|s| {
                let s = from_tonic(s);
                self.obs.finish(s.code());
                downstream(s)
            })?;
            self.obs.finish(crate::status::Code::Ok);
            let mut t = t.map(MetadataMap::into_headers).unwrap_or_default();
            for k in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                t.remove(k);
            }
            self.trailers = Some(t);
        }
        Ok(next)
    }

    /// [`ReplyStream::message`] for threads without an async runtime.
    pub fn blocking_message(&mut self) -> Result<Option<Bytes>, Status> {
        futures_executor::block_on(self.message())
    }
}

impl Stream for ReplyStream {
    type Item = Result<Bytes, Status>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let fut = this.message();
        futures_util::pin_mut!(fut);
        fut.poll(cx).map(Result::transpose)
    }
}

/// tonic's client reports two conditions with other codes than the gRPC spec
/// gives them: its own deadline timer (`CANCELLED`, "Timeout expired") and a
/// reply over the receive limit (`OUT_OF_RANGE`).
fn from_tonic(s: tonic::Status) -> Status {
    let mapped = match (s.code(), s.message()) {
        (tonic::Code::Cancelled, "Timeout expired") => Some(Status::deadline_exceeded("deadline exceeded")),
        (tonic::Code::OutOfRange, m) if m.starts_with("Error, decoded message length too large") => {
            Some(Status::resource_exhausted(format!("received message larger than max: {m}")))
        }
        _ => None,
    };
    if let Some(m) = mapped {
        return m;
    }
    // hyper cancels a request it had not sent when its connection closes
    // (e.g. the server's GOAWAY raced the call); tonic reports that as
    // CANCELLED, but the caller cancelled nothing: the server is going away
    // and never saw the call, which gRPC calls UNAVAILABLE.
    if is_hyper_canceled(&s) {
        return Status::unavailable(format!("connection closing, call not sent: {}", s.message()));
    }
    // The connection broke under a call (e.g. the server's grace ran out):
    // tonic says UNKNOWN "transport error"; the gRPC spec says UNAVAILABLE,
    // as grpcio and grpc-go report it.
    if s.code() == tonic::Code::Unknown {
        if let Some(cause) = transport_cause(&s) {
            return Status::unavailable(format!("connection lost: {cause}"));
        }
    }
    // A TLS failure surfacing through HTTP/2 (e.g. the server refused our
    // client certificate after the handshake): say what it was, not just
    // "transport error", and count it.
    if let Some((reason, msg)) = std::error::Error::source(&s).and_then(crate::tls::tls_cause) {
        crate::tls::count_client_error(reason, &msg);
        return Status::unavailable(format!("TLS: {msg}"));
    }
    s.into()
}

fn is_hyper_canceled(s: &tonic::Status) -> bool {
    causes(s).any(|e| e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled))
}

/// The innermost HTTP/2 or I/O error under a tonic status, if any.
fn transport_cause(s: &tonic::Status) -> Option<String> {
    causes(s).filter(|e| e.is::<hyper::Error>() || e.is::<h2::Error>() || e.is::<std::io::Error>()).last().map(|e| e.to_string())
}

/// The errors under a tonic status, outermost first.
fn causes(s: &tonic::Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(s), |e| e.source())
}

fn downstream(s: Status) -> Status {
    s.into_downstream()
}

/// Headers of an outgoing call: the caller's metadata, then what the ctx
/// propagates (request id, trace context) and the remaining deadline.
fn outgoing_headers(ctx: &Ctx, deadline: Option<Instant>, metadata: &HeaderMap) -> Result<HeaderMap, Status> {
    let mut h = metadata.clone();
    if !h.contains_key(REQUEST_ID_HEADER) {
        let id = HeaderValue::from_str(ctx.request_id()).map_err(|_| Status::internal("request id is not a valid header value"))?;
        h.insert(REQUEST_ID_HEADER, id);
    }
    for name in TRACE_HEADERS {
        if let (false, Some(v)) = (h.contains_key(name), ctx.metadata().get(name)) {
            h.insert(name, v.clone());
        }
    }
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Status::deadline_exceeded("deadline exceeded before the call was sent"));
        }
        let v = HeaderValue::from_str(&format_grpc_timeout(left)).expect("grpc-timeout is ASCII");
        h.insert("grpc-timeout", v);
    }
    Ok(h)
}

/// Runs `fut` until the deadline or until the ctx is cancelled.
async fn bounded<T>(ctx: &Ctx, deadline: Option<Instant>, fut: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    // The timer is bound to a runtime when created: host threads have none, so
    // they use the client runtime's.
    let sleep = deadline.map(|d| match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::time::sleep_until(d.into()),
        Err(_) => {
            let _g = client_runtime().enter();
            tokio::time::sleep_until(d.into())
        }
    });
    let cancelled = ctx.cancel_signal();
    tokio::select! {
        biased;
        r = fut => match r {
            // A peer that resets the stream when the deadline passes (grpc-go
            // servers do) can beat our own timer: past the deadline, the
            // call's status is DEADLINE_EXCEEDED, not the reset's CANCELLED.
            Err(s) if s.code() == crate::status::Code::Cancelled && deadline.is_some_and(|d| Instant::now() >= d) => {
                Err(Status::deadline_exceeded("deadline exceeded"))
            }
            r => r,
        },
        _ = async { match sleep { Some(s) => s.await, None => std::future::pending().await } } => {
            Err(Status::deadline_exceeded("deadline exceeded"))
        }
        reason = cancelled => Err(match reason {
            crate::context::CancelReason::DeadlineExceeded => Status::deadline_exceeded("deadline exceeded"),
            _ => Status::cancelled("the caller's context was cancelled"),
        }),
    }
}

/// Moves message bytes as they are: the core never decodes user protobufs.
#[derive(Clone, Copy, Default)]
struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;
    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
