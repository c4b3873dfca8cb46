//! The runtime method table: what the server knows about each method it serves
//! and what a client needs to call one.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The four gRPC call kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodKind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    BidiStreaming,
}

impl MethodKind {
    pub fn client_streams(self) -> bool {
        matches!(self, MethodKind::ClientStreaming | MethodKind::BidiStreaming)
    }
    pub fn server_streams(self) -> bool {
        matches!(self, MethodKind::ServerStreaming | MethodKind::BidiStreaming)
    }
}

/// Deadlines are mandatory: every method has a default or says it has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadlinePolicy {
    /// Used when the caller sends no deadline; the earlier of the two wins otherwise.
    Default(Duration),
    /// The method runs without a deadline unless the caller sets one.
    NoDeadline,
}

/// One method: full path, kind, deadline policy and optional app-error enum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodDesc {
    path: Arc<str>,
    kind: MethodKind,
    deadline: DeadlinePolicy,
    app_error_enum: Option<Arc<str>>,
    /// The host binding's own number for the method (its handler table index):
    /// host calls carry it back, so no lookup by path is needed per call.
    host_id: u64,
    /// Stats of this method (see `stats`), shared by clones.
    obs: Arc<crate::stats::DescSlot>,
}

/// A method path that is not `/package.Service/Method`.
#[derive(Debug, thiserror::Error)]
#[error("invalid method path {0:?}: expected \"/package.Service/Method\"")]
pub struct InvalidPath(pub String);

impl MethodDesc {
    /// `path` is the full path, `/package.Service/Method`.
    pub fn new(path: &str, kind: MethodKind, deadline: DeadlinePolicy) -> Result<MethodDesc, InvalidPath> {
        let ok = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(svc, m)| !svc.is_empty() && !m.is_empty() && !m.contains('/'));
        if !ok {
            return Err(InvalidPath(path.to_string()));
        }
        Ok(MethodDesc { path: path.into(), kind, deadline, app_error_enum: None, host_id: u64::MAX, obs: Default::default() })
    }

    /// Names the proto enum (full name) whose values this method returns as app errors.
    pub fn with_app_error_enum(mut self, name: &str) -> MethodDesc {
        self.app_error_enum = Some(name.into());
        self
    }

    /// Sets the number a host binding knows this method by (see [`MethodDesc::host_id`]).
    pub fn with_host_id(mut self, id: u64) -> MethodDesc {
        self.host_id = id;
        self
    }

    /// The host binding's number for this method; `u64::MAX` if none was set.
    pub fn host_id(&self) -> u64 {
        self.host_id
    }

    pub fn path(&self) -> &str {
        &self.path
    }
    pub(crate) fn path_arc(&self) -> &Arc<str> {
        &self.path
    }
    pub(crate) fn obs_slot(&self) -> &crate::stats::DescSlot {
        &self.obs
    }
    /// `package.Service`.
    pub fn service(&self) -> &str {
        let rest = &self.path[1..];
        &rest[..rest.find('/').unwrap_or(rest.len())]
    }
    /// `Method`.
    pub fn name(&self) -> &str {
        &self.path[self.path.rfind('/').map_or(0, |i| i + 1)..]
    }
    pub fn kind(&self) -> MethodKind {
        self.kind
    }
    pub fn deadline_policy(&self) -> DeadlinePolicy {
        self.deadline
    }
    pub fn app_error_enum(&self) -> Option<&str> {
        self.app_error_enum.as_deref()
    }

    /// The effective deadline of a call: the earliest of the caller's and the default.
    pub fn effective_deadline(&self, now: Instant, caller: Option<Instant>) -> Option<Instant> {
        let default = match self.deadline {
            DeadlinePolicy::Default(d) => now.checked_add(d),
            DeadlinePolicy::NoDeadline => None,
        };
        match (caller, default) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_validated_and_split() {
        let m = MethodDesc::new("/courier.test.Test/UnaryUnary", MethodKind::Unary, DeadlinePolicy::NoDeadline).unwrap();
        assert_eq!(m.service(), "courier.test.Test");
        assert_eq!(m.name(), "UnaryUnary");
        for bad in ["", "/", "x.Y/Z", "/x.Y/", "//Z", "/x.Y/Z/W", "/x.Y"] {
            assert!(MethodDesc::new(bad, MethodKind::Unary, DeadlinePolicy::NoDeadline).is_err(), "{bad}");
        }
    }

    #[test]
    fn effective_deadline_is_the_earliest() {
        let now = Instant::now();
        let m = MethodDesc::new("/a.B/C", MethodKind::Unary, DeadlinePolicy::Default(Duration::from_secs(2))).unwrap();
        assert_eq!(m.effective_deadline(now, None), Some(now + Duration::from_secs(2)));
        let early = now + Duration::from_millis(5);
        assert_eq!(m.effective_deadline(now, Some(early)), Some(early));
        let late = now + Duration::from_secs(9);
        assert_eq!(m.effective_deadline(now, Some(late)), Some(now + Duration::from_secs(2)));
        let n = MethodDesc::new("/a.B/C", MethodKind::Unary, DeadlinePolicy::NoDeadline).unwrap();
        assert_eq!(n.effective_deadline(now, None), None);
        assert_eq!(n.effective_deadline(now, Some(late)), Some(late));
    }
}
