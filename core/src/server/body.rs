//! Response bodies: framed message chunks, then trailers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Sleep;

use super::dispatch::CallGuard;
use crate::call::StreamItem;
use crate::context::{CancelReason, Ctx};
use crate::status::Status;
use crate::wire::encode_message;

/// The body of every gRPC response the server sends.
pub enum ReplyBody {
    /// Trailers-only responses: the status is in the headers.
    Empty,
    /// A unary reply: up to two data chunks, then trailers.
    Unary { data: Option<Bytes>, data2: Option<Bytes>, trailers: Option<HeaderMap> },
    /// A streaming reply fed by the handler through a channel.
    Stream(Box<StreamBody>),
}

pub struct StreamBody {
    pub(super) ctx: Ctx,
    /// The item received before the headers were sent.
    pub(super) first: Option<StreamItem>,
    pub(super) rx: mpsc::Receiver<StreamItem>,
    pub(super) pending: Option<Bytes>,
    pub(super) deadline: Option<Pin<Box<Sleep>>>,
    /// The spawned Rust-native handler, aborted if the call ends first.
    pub(super) task: Option<AbortHandle>,
    /// Cancels the ctx if the body is dropped before the end (client gone).
    pub(super) guard: Option<CallGuard>,
    pub(super) done: bool,
}

impl ReplyBody {
    pub(super) fn unary(msg: Bytes, trailers: HeaderMap) -> ReplyBody {
        let (a, b) = encode_message(msg);
        ReplyBody::Unary { data: Some(a), data2: b, trailers: Some(trailers) }
    }

    /// No message, only trailers (after headers sent on their own).
    pub(super) fn trailers(trailers: HeaderMap) -> ReplyBody {
        ReplyBody::Unary { data: None, data2: None, trailers: Some(trailers) }
    }
}

impl http_body::Body for ReplyBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ReplyBody::Empty => Poll::Ready(None),
            ReplyBody::Unary { data, data2, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                if let Some(d) = data2.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            ReplyBody::Stream(s) => s.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplyBody::Empty => true,
            ReplyBody::Unary { data, data2, trailers } => data.is_none() && data2.is_none() && trailers.is_none(),
            ReplyBody::Stream(s) => s.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Empty => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl StreamBody {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(d) = self.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        let item = match self.first.take().map(Some).map(Poll::Ready).unwrap_or_else(|| self.rx.poll_recv(cx)) {
            Poll::Ready(item) => item,
            Poll::Pending => {
                if let Some(sleep) = self.deadline.as_mut() {
                    if sleep.as_mut().poll(cx).is_ready() {
                        self.ctx.cancel(CancelReason::DeadlineExceeded);
                        return self.end(Err(Status::deadline_exceeded("deadline exceeded")));
                    }
                }
                return Poll::Pending;
            }
        };
        match item {
            Some(StreamItem::Message(m)) => {
                let (a, b) = encode_message(m);
                self.pending = b;
                Poll::Ready(Some(Ok(Frame::data(a))))
            }
            Some(StreamItem::End(result)) => self.end(result),
            None => self.end(Err(Status::internal("handler ended the stream without a status"))),
        }
    }

    fn end(&mut self, result: Result<(), Status>) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.done = true;
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let status = match result {
            Ok(()) => Status::new(crate::status::Code::Ok, ""),
            Err(s) => s.at_boundary(),
        };
        if let Some(g) = self.guard.take() {
            g.finish(status.code());
        }
        let trailers = super::dispatch::reply_trailers(&self.ctx, &status);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

use std::future::Future;
