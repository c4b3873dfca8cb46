//! Courier's engine: gRPC over HTTP/2 with mandatory deadlines, a
//! language-neutral call boundary, and the machinery every binding shares.
//!
//! The public surface is small: [`Server`], [`Channel`], [`Ctx`], [`Status`],
//! the method table ([`MethodDesc`]) and the call boundary ([`Handler`],
//! [`HostQueue`]). Everything else is private machinery.

pub mod admission;
pub mod call;
pub mod client;
pub mod context;
pub mod debug;
pub mod health;
pub mod host;
pub mod limits;
pub mod metadata;
pub mod method;
pub mod reflection;
pub mod server;
pub mod stats;
pub mod status;
pub mod tls;
pub mod trace;
pub mod wire;

pub use call::{BoxFuture, Handler, RequestStream, ResponseSender};
pub use client::{Channel, ChannelConfig, ChannelError, Reply, ReplyStream};
pub use context::{CancelReason, Ctx, Identity};
pub use health::{HealthReporter, ServingStatus};
pub use host::{hand_back_held, HeldBatch, HostCall, HostQueue, HostRequest, Reply as HostReply, ReplyBatch, UnaryReply};
pub use method::{DeadlinePolicy, MethodDesc, MethodKind};
pub use server::{Http2Config, Server, ServerConfig, ServerError};
pub use status::{AppError, Code, Status};
pub use tls::{ClientTls, ClientTlsConfig, ServerTls, ServerTlsConfig, TlsError};
