//! The peer: a tonic 0.14 server with a unary echo at `/bench.Echo/Echo`.
//!
//! `--flavor current_thread|multi_thread` (multi_thread with `--workers N`, default 1).
//!
//! The service is what tonic's code generator writes for
//! `rpc Echo(Req) returns (Req)` (a `tower::Service` that matches the path and
//! calls `tonic::server::Grpc::unary`). The message codec is written here rather
//! than taken from `tonic-prost` (no new dependency for the workspace lock): it
//! implements `tonic::codec::Codec` for `message Req { string s = 1; }` the way
//! prost does — decode into an owned `String` with UTF-8 validation, skip
//! unknown fields, encode tag + varint length + bytes.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut};
use courier_bench::{announce_port, arg_value, port_arg, usage, METHOD};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status};

/// `message Req { string s = 1; }`
#[derive(Debug, Default)]
struct Req {
    s: String,
}

#[derive(Clone, Copy, Default)]
struct ReqCodec;

impl Codec for ReqCodec {
    type Encode = Req;
    type Decode = Req;
    type Encoder = ReqCodec;
    type Decoder = ReqCodec;
    fn encoder(&mut self) -> ReqCodec {
        ReqCodec
    }
    fn decoder(&mut self) -> ReqCodec {
        ReqCodec
    }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(dst: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        dst.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}

fn get_varint(src: &mut impl Buf) -> Result<u64, Status> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !src.has_remaining() {
            return Err(Status::internal("truncated varint"));
        }
        let b = src.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(Status::internal("varint too long"))
}

impl Encoder for ReqCodec {
    type Item = Req;
    type Error = Status;
    fn encode(&mut self, item: Req, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        if !item.s.is_empty() {
            dst.reserve(1 + varint_len(item.s.len() as u64) + item.s.len());
            dst.put_u8(0x0a);
            put_varint(dst, item.s.len() as u64);
            dst.put_slice(item.s.as_bytes());
        }
        Ok(())
    }
}

impl Decoder for ReqCodec {
    type Item = Req;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Req>, Status> {
        let mut msg = Req::default();
        while src.has_remaining() {
            let key = get_varint(src)?;
            let len_of = |src: &mut DecodeBuf<'_>| -> Result<usize, Status> {
                let n = get_varint(src)? as usize;
                if n > src.remaining() {
                    return Err(Status::internal("truncated field"));
                }
                Ok(n)
            };
            match (key >> 3, key & 7) {
                (1, 2) => {
                    let n = len_of(src)?;
                    let mut v = vec![0u8; n];
                    src.copy_to_slice(&mut v);
                    msg.s = String::from_utf8(v).map_err(|_| Status::internal("invalid UTF-8 in field s"))?;
                }
                (_, 0) => {
                    get_varint(src)?;
                }
                (_, 2) => {
                    let n = len_of(src)?;
                    src.advance(n);
                }
                (_, 1) if src.remaining() >= 8 => src.advance(8),
                (_, 5) if src.remaining() >= 4 => src.advance(4),
                _ => return Err(Status::internal("invalid wire type")),
            }
        }
        Ok(Some(msg))
    }
}

/// The user's service.
struct EchoImpl;

impl EchoImpl {
    async fn echo(&self, req: Request<Req>) -> Result<Response<Req>, Status> {
        Ok(Response::new(Req { s: req.into_inner().s }))
    }
}

/// What tonic's code generator writes for the service (`EchoServer<T>`).
#[derive(Clone)]
struct EchoServer {
    inner: std::sync::Arc<EchoImpl>,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send + 'static>>;

impl<B> tonic::codegen::Service<http::Request<B>> for EchoServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            METHOD => {
                struct EchoSvc(std::sync::Arc<EchoImpl>);
                impl tonic::server::UnaryService<Req> for EchoSvc {
                    type Response = Req;
                    type Future = BoxFuture<Response<Req>, Status>;
                    fn call(&mut self, request: Request<Req>) -> Self::Future {
                        let inner = self.0.clone();
                        Box::pin(async move { inner.echo(request).await })
                    }
                }
                let inner = self.inner.clone();
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(ReqCodec);
                    Ok(grpc.unary(EchoSvc(inner), req).await)
                })
            }
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

fn main() {
    let port = port_arg();
    let flavor = arg_value("--flavor").unwrap_or_else(|| "current_thread".into());
    let mut b = match flavor.as_str() {
        "current_thread" => tokio::runtime::Builder::new_current_thread(),
        "multi_thread" => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(
                arg_value("--workers").map(|w| w.parse().unwrap_or_else(|_| usage("--workers takes a number"))).unwrap_or(1),
            );
            b
        }
        _ => usage("--flavor is current_thread or multi_thread"),
    };
    let rt = b.enable_all().build().expect("runtime");
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        announce_port(l.local_addr().expect("addr").port());
        let incoming = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
        let svc = EchoServer { inner: std::sync::Arc::new(EchoImpl) };
        if let Err(e) = tonic::transport::Server::builder().serve_with_incoming(svc, incoming).await {
            usage(&format!("server: {e}"));
        }
    });
}
