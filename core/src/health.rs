//! The standard `grpc.health.v1.Health` service, built into every server.
//!
//! Each registered service is `SERVING` once registered; the application can set
//! any service's status; all turn `NOT_SERVING` when shutdown begins. The empty
//! service name `""` is the server as a whole.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::watch;

use crate::call::Handler;
use crate::method::{DeadlinePolicy, MethodDesc, MethodKind};
use crate::status::Status;

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    /// Only sent by `Watch`, for a service the server does not know.
    ServiceUnknown = 3,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    status: i32,
}

pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// Sets and reads per-service health. Cheap to clone.
#[derive(Clone, Default)]
pub struct HealthReporter {
    services: Arc<Mutex<HashMap<String, watch::Sender<ServingStatus>>>>,
}

impl HealthReporter {
    pub(crate) fn new() -> HealthReporter {
        let h = HealthReporter::default();
        h.set_serving("", ServingStatus::Serving);
        h
    }

    /// Sets a service's status (`""`: the whole server); watchers see the change.
    pub fn set_serving(&self, service: &str, status: ServingStatus) {
        let mut m = self.services.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(service) {
            Some(tx) => {
                tx.send_replace(status);
            }
            None => {
                m.insert(service.to_string(), watch::channel(status).0);
            }
        }
    }

    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.services.lock().unwrap_or_else(|e| e.into_inner()).get(service).map(|tx| *tx.borrow())
    }

    /// Names of the services with a status (not `""`, not merely watched).
    pub(crate) fn served_services(&self) -> Vec<String> {
        let m = self.services.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().filter(|(k, tx)| !k.is_empty() && *tx.borrow() != ServingStatus::ServiceUnknown).map(|(k, _)| k.clone()).collect()
    }

    pub(crate) fn set_all_not_serving(&self) {
        for tx in self.services.lock().unwrap_or_else(|e| e.into_inner()).values() {
            tx.send_replace(ServingStatus::NotServing);
        }
    }

    fn subscribe(&self, service: &str) -> watch::Receiver<ServingStatus> {
        let mut m = self.services.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(service.to_string()).or_insert_with(|| watch::channel(ServingStatus::ServiceUnknown).0).subscribe()
    }

    /// The method table entries of the health service.
    pub(crate) fn methods(&self) -> Vec<(MethodDesc, Handler)> {
        let check = {
            let h = self.clone();
            Handler::unary(move |_ctx, req: Bytes| {
                let h = h.clone();
                async move {
                    let req = decode(&req)?;
                    match h.status(&req.service) {
                        Some(s) if s != ServingStatus::ServiceUnknown => Ok(encode(s)),
                        _ => Err(Status::not_found(format!("unknown service {:?}", req.service))),
                    }
                }
            })
        };
        let watch = {
            let h = self.clone();
            Handler::server_streaming(move |ctx, req: Bytes, tx| {
                let h = h.clone();
                async move {
                    let req = decode(&req)?;
                    let mut rx = h.subscribe(&req.service);
                    loop {
                        let s = *rx.borrow_and_update();
                        tx.send(encode(s)).await?;
                        tokio::select! {
                            r = rx.changed() => if r.is_err() { return Ok(()) },
                            _ = ctx.cancelled() => return Ok(()),
                        }
                    }
                }
            })
        };
        let desc = |m: &str, kind, dl| {
            MethodDesc::new(&format!("/{HEALTH_SERVICE}/{m}"), kind, dl).expect("static method path is valid")
        };
        vec![
            (desc("Check", MethodKind::Unary, DeadlinePolicy::Default(Duration::from_secs(10))), check),
            (desc("Watch", MethodKind::ServerStreaming, DeadlinePolicy::NoDeadline), watch),
        ]
    }
}

fn decode(b: &[u8]) -> Result<HealthCheckRequest, Status> {
    HealthCheckRequest::decode(b).map_err(|e| Status::invalid_argument(format!("bad HealthCheckRequest: {e}")))
}

fn encode(s: ServingStatus) -> Bytes {
    Bytes::from(HealthCheckResponse { status: s as i32 }.encode_to_vec())
}
