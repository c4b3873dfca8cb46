//! The language-neutral call boundary: how a handler receives a call and
//! completes it.
//!
//! A handler gets a [`Ctx`] and the request bytes (streaming: a [`RequestStream`])
//! and completes with reply bytes or a [`Status`] (streaming: a [`ResponseSender`]).
//! Rust services implement [`Handler`] closures directly; host languages use the
//! pull-based, batched [`crate::host::HostQueue`] on the same boundary. Every type
//! here can be used from any thread: async methods for runtimes, `blocking_*`
//! twins for host threads that own no runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::context::Ctx;
use crate::host::HostQueue;
use crate::status::Status;
use crate::wire::FrameDecoder;

/// A boxed, sendable future (the handler return type).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pub(crate) type UnaryFn = dyn Fn(Ctx, Bytes) -> BoxFuture<Result<Bytes, Status>> + Send + Sync;
type ServerStreamingFn = dyn Fn(Ctx, Bytes, ResponseSender) -> BoxFuture<Result<(), Status>> + Send + Sync;
type ClientStreamingFn = dyn Fn(Ctx, RequestStream) -> BoxFuture<Result<Bytes, Status>> + Send + Sync;
type BidiFn = dyn Fn(Ctx, RequestStream, ResponseSender) -> BoxFuture<Result<(), Status>> + Send + Sync;

/// What serves a method: a Rust-native async function of the method's kind, or
/// a host-language queue.
#[derive(Clone)]
pub enum Handler {
    Unary(Arc<UnaryFn>),
    ServerStreaming(Arc<ServerStreamingFn>),
    ClientStreaming(Arc<ClientStreamingFn>),
    BidiStreaming(Arc<BidiFn>),
    /// Calls are queued for host threads that pull them in batches.
    Host(HostQueue),
}

impl Handler {
    pub fn unary<F, Fut>(f: F) -> Handler
    where
        F: Fn(Ctx, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Status>> + Send + 'static,
    {
        Handler::Unary(Arc::new(move |c, b| Box::pin(f(c, b))))
    }

    pub fn server_streaming<F, Fut>(f: F) -> Handler
    where
        F: Fn(Ctx, Bytes, ResponseSender) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        Handler::ServerStreaming(Arc::new(move |c, b, s| Box::pin(f(c, b, s))))
    }

    pub fn client_streaming<F, Fut>(f: F) -> Handler
    where
        F: Fn(Ctx, RequestStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Status>> + Send + 'static,
    {
        Handler::ClientStreaming(Arc::new(move |c, r| Box::pin(f(c, r))))
    }

    pub fn bidi_streaming<F, Fut>(f: F) -> Handler
    where
        F: Fn(Ctx, RequestStream, ResponseSender) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        Handler::BidiStreaming(Arc::new(move |c, r, s| Box::pin(f(c, r, s))))
    }

    /// The kind a Rust-native handler serves; `None` for a host queue (any kind).
    pub fn kind(&self) -> Option<crate::method::MethodKind> {
        use crate::method::MethodKind::*;
        match self {
            Handler::Unary(_) => Some(Unary),
            Handler::ServerStreaming(_) => Some(ServerStreaming),
            Handler::ClientStreaming(_) => Some(ClientStreaming),
            Handler::BidiStreaming(_) => Some(BidiStreaming),
            Handler::Host(_) => None,
        }
    }
}

/// The messages a client streams to a handler, decoded from gRPC frames.
pub struct RequestStream {
    body: Incoming,
    decoder: FrameDecoder,
    done: bool,
}

impl RequestStream {
    pub(crate) fn new(body: Incoming, max_message_size: usize) -> RequestStream {
        RequestStream { body, decoder: FrameDecoder::new(max_message_size), done: false }
    }

    /// The next message; `Ok(None)` once the client half-closed.
    pub async fn message(&mut self) -> Result<Option<Bytes>, Status> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    /// [`RequestStream::message`] as a poll function.
    pub(crate) fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Status>> {
        loop {
            if let Some(m) = self.decoder.next_message()? {
                return Poll::Ready(Ok(Some(m)));
            }
            if self.done {
                return Poll::Ready(Ok(None));
            }
            match std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(data);
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(body_error(e))),
                None => {
                    self.done = true;
                    self.decoder.finish()?;
                }
            }
        }
    }

    /// [`RequestStream::message`] for threads without an async runtime: blocks
    /// this thread (the I/O threads keep running).
    pub fn blocking_message(&mut self) -> Result<Option<Bytes>, Status> {
        futures_executor::block_on(self.message())
    }

    /// Reads exactly one message and the end of the stream (unary requests).
    pub(crate) async fn single(mut self) -> Result<Bytes, Status> {
        let mut first = None;
        std::future::poll_fn(|cx| self.poll_single(&mut first, cx)).await
    }

    /// [`RequestStream::single`] as a poll function; `first` keeps the message
    /// between polls (start with `None`).
    pub(crate) fn poll_single(&mut self, first: &mut Option<Bytes>, cx: &mut Context<'_>) -> Poll<Result<Bytes, Status>> {
        if first.is_none() {
            match std::task::ready!(self.poll_message(cx))? {
                Some(m) => *first = Some(m),
                None => return Poll::Ready(Err(Status::internal("client sent no request message"))),
            }
        }
        match std::task::ready!(self.poll_message(cx))? {
            Some(_) => {
                Poll::Ready(Err(Status::internal("client sent more than one request message for a unary request")))
            }
            None => Poll::Ready(Ok(first.take().unwrap_or_default())),
        }
    }
}

fn body_error(e: hyper::Error) -> Status {
    use std::error::Error;
    let reset = e.source().and_then(|s| s.downcast_ref::<h2::Error>()).and_then(|h| h.reason());
    match reset {
        Some(reason) => Status::cancelled(format!("client reset the stream ({reason})")),
        None => Status::cancelled(format!("error reading the request: {e}")),
    }
}

/// One item of a streaming response, from handler to the I/O side.
pub(crate) enum StreamItem {
    Message(Bytes),
    End(Result<(), Status>),
}

/// Sends response messages of a streaming call; finish with [`ResponseSender::finish`]
/// (or by returning from a Rust-native handler).
#[derive(Clone)]
pub struct ResponseSender {
    tx: mpsc::Sender<StreamItem>,
}

/// Messages buffered per streaming response before `send` waits: bounds memory
/// when the client reads slower than the handler writes.
const STREAM_BUFFER: usize = 16;

impl ResponseSender {
    pub(crate) fn channel() -> (ResponseSender, mpsc::Receiver<StreamItem>) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        (ResponseSender { tx }, rx)
    }

    /// Sends one message; waits while the client is behind. `CANCELLED` once the
    /// call is over (client gone, deadline passed).
    pub async fn send(&self, msg: Bytes) -> Result<(), Status> {
        self.tx.send(StreamItem::Message(msg)).await.map_err(|_| gone())
    }

    /// [`ResponseSender::send`] for threads without an async runtime.
    pub fn blocking_send(&self, msg: Bytes) -> Result<(), Status> {
        self.tx.blocking_send(StreamItem::Message(msg)).map_err(|_| gone())
    }

    /// Sends without waiting: `Ok(None)` when queued, `Ok(Some(msg))` (the
    /// message back) when the buffer is full, `CANCELLED` once the call is over.
    pub fn try_send(&self, msg: Bytes) -> Result<Option<Bytes>, Status> {
        match self.tx.try_send(StreamItem::Message(msg)) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(StreamItem::Message(m))) => Ok(Some(m)),
            Err(_) => Err(gone()),
        }
    }

    /// Ends the stream with OK or an error status. Host handlers must end every
    /// stream; a sender dropped without it ends the call with `INTERNAL`.
    pub async fn finish(self, result: Result<(), Status>) {
        let _ = self.tx.send(StreamItem::End(result)).await;
    }

    /// [`ResponseSender::finish`] for threads without an async runtime.
    pub fn blocking_finish(self, result: Result<(), Status>) {
        let _ = self.tx.blocking_send(StreamItem::End(result));
    }

    /// Ends the stream without waiting; false if the buffer is full or closed.
    pub(crate) fn try_end(&self, result: Result<(), Status>) -> bool {
        self.tx.try_send(StreamItem::End(result)).is_ok()
    }

    /// True once the receiving side is gone (the call ended).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

fn gone() -> Status {
    Status::cancelled("the call has ended (client gone or deadline passed)")
}
