//! The ceiling: bare hyper 1 + h2 on one tokio `current_thread` runtime. The
//! 5-byte gRPC frame is checked by hand and the request frame is sent back as
//! the reply (same message), then `grpc-status: 0` trailers. HTTP/2 settings
//! match Courier's defaults (windows, stream limit, no date header), so the
//! difference to `courier-echo` is Courier's own work per call.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use courier_bench::{announce_port, port_arg, METHOD};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

enum EchoBody {
    /// Data (if any), then trailers.
    Reply { data: Option<Bytes>, trailers: Option<HeaderMap> },
}

impl http_body::Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let EchoBody::Reply { data, trailers } = self.get_mut();
        if let Some(d) = data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
    fn is_end_stream(&self) -> bool {
        let EchoBody::Reply { data, trailers } = self;
        data.is_none() && trailers.is_none()
    }
}

fn status_trailers(code: &'static str) -> HeaderMap {
    let mut t = HeaderMap::with_capacity(1);
    t.insert("grpc-status", HeaderValue::from_static(code));
    t
}

fn reply(data: Option<Bytes>, code: &'static str) -> Response<EchoBody> {
    let mut r = Response::new(EchoBody::Reply { data, trailers: Some(status_trailers(code)) });
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    r
}

async fn echo(req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    if req.uri().path() != METHOD {
        return Ok(reply(None, "12")); // UNIMPLEMENTED
    }
    let mut body = req.into_body();
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    while let Some(f) = body.frame().await {
        let Ok(f) = f else { return Ok(reply(None, "1")) }; // CANCELLED
        let Ok(d) = f.into_data() else { continue };
        match (&first, &mut more) {
            (None, _) => first = Some(d),
            (Some(a), None) => {
                let mut m = BytesMut::from(&a[..]);
                m.extend_from_slice(&d);
                more = Some(m);
            }
            (Some(_), Some(m)) => m.extend_from_slice(&d),
        }
    }
    let frame = match more {
        Some(m) => m.freeze(),
        None => first.unwrap_or_default(),
    };
    // One uncompressed message whose length matches the prefix.
    let ok = frame.len() >= 5
        && frame[0] == 0
        && u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize == frame.len() - 5;
    if !ok {
        return Ok(reply(None, "13")); // INTERNAL
    }
    Ok(reply(Some(frame), "0"))
}

fn main() {
    let port = port_arg();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        announce_port(l.local_addr().expect("addr").port());
        loop {
            let s = match l.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut b = http2::Builder::new(TokioExecutor::new());
                b.timer(TokioTimer::new())
                    .auto_date_header(false)
                    .initial_stream_window_size(1024 * 1024)
                    .initial_connection_window_size(2 * 1024 * 1024)
                    .max_concurrent_streams(1024);
                let _ = b.serve_connection(TokioIo::new(s), hyper::service::service_fn(echo)).await;
            });
        }
    });
}
