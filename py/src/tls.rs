//! `courier._core.ServerTLS`, `ClientTLS`, the dev CA and the TLS counters:
//! conversions only, everything lives in `courier_core::tls`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use courier_core::tls::devca::{self, IssueRequest};
use courier_core::tls::{tls_stats as core_tls_stats, ExpectedIdentity};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{tls_error, value_error};

fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    if s.is_finite() && s > 0.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(value_error(format!("{name} must be a positive number of seconds, got {s}")))
    }
}

/// Server TLS settings, loaded from PEM files and reloaded when they change.
#[pyclass(module = "courier._core", name = "ServerTLS", frozen)]
pub struct ServerTls {
    pub(crate) inner: courier_core::ServerTls,
}

#[pymethods]
impl ServerTls {
    #[staticmethod]
    #[pyo3(signature = (*, cert, key, ca, require_client_cert=true, handshake_timeout=10.0, reload_interval=Some(1.0), tls13_tickets=None))]
    fn from_files(
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
        require_client_cert: bool,
        handshake_timeout: f64,
        reload_interval: Option<f64>,
        tls13_tickets: Option<usize>,
    ) -> PyResult<ServerTls> {
        let mut cfg = courier_core::ServerTlsConfig::new(cert, key, ca);
        cfg.require_client_cert = require_client_cert;
        cfg.handshake_timeout = seconds("handshake_timeout", handshake_timeout)?;
        cfg.reload_interval = reload_interval.map(|s| seconds("reload_interval", s)).transpose()?;
        if let Some(n) = tls13_tickets {
            cfg.tls13_tickets = n;
        }
        Ok(ServerTls { inner: courier_core::ServerTls::new(cfg).map_err(tls_error)? })
    }

    /// This server's own SPIFFE ID (from the current certificate).
    #[getter]
    fn identity(&self) -> String {
        self.inner.identity().spiffe_id
    }

    /// Re-reads the files now; on error the current certificates stay.
    fn reload(&self) -> PyResult<()> {
        self.inner.reload().map_err(tls_error)
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "ServerTLS(identity={:?}, cert={:?}, require_client_cert={})",
            self.inner.identity().spiffe_id,
            c.cert.display().to_string(),
            if c.require_client_cert { "True" } else { "False" }
        )
    }
}

/// Client TLS settings, loaded from PEM files and reloaded when they change.
#[pyclass(module = "courier._core", name = "ClientTLS", frozen)]
pub struct ClientTls {
    pub(crate) inner: courier_core::ClientTls,
}

#[pymethods]
impl ClientTls {
    #[staticmethod]
    #[pyo3(signature = (*, ca, server_identity, cert=None, key=None, reload_interval=Some(1.0)))]
    fn from_files(
        ca: PathBuf,
        server_identity: &str,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        reload_interval: Option<f64>,
    ) -> PyResult<ClientTls> {
        let expected: ExpectedIdentity = server_identity.parse().map_err(value_error)?;
        let mut cfg = courier_core::ClientTlsConfig::new(ca, expected);
        cfg = match (cert, key) {
            (Some(c), Some(k)) => cfg.with_client_cert(c, k),
            (None, None) => cfg,
            _ => return Err(value_error("give both cert and key, or neither")),
        };
        cfg.reload_interval = reload_interval.map(|s| seconds("reload_interval", s)).transpose()?;
        Ok(ClientTls { inner: courier_core::ClientTls::new(cfg).map_err(tls_error)? })
    }

    /// The server identity this client accepts.
    #[getter]
    fn server_identity(&self) -> String {
        match &self.inner.config().server_identity {
            ExpectedIdentity::Exact(id) => id.clone(),
            ExpectedIdentity::TrustDomain(td) => format!("spiffe://{td}"),
        }
    }

    /// Re-reads the files now; on error the current certificates stay.
    fn reload(&self) -> PyResult<()> {
        self.inner.reload().map_err(tls_error)
    }

    fn __repr__(&self) -> String {
        format!("ClientTLS(server_identity={:?})", self.server_identity())
    }
}

/// Creates a dev CA in `out` (ca.pem, ca.key). Returns their paths.
#[pyfunction]
#[pyo3(signature = (trust_domain, out, days=3650))]
pub fn ca_init(py: Python<'_>, trust_domain: &str, out: PathBuf, days: u32) -> PyResult<(String, String)> {
    let w = py.detach(|| devca::init_ca(trust_domain, &out, days)).map_err(tls_error)?;
    Ok((w.cert.display().to_string(), w.key.display().to_string()))
}

/// Issues a certificate from the dev CA in `ca` into `out` (cert.pem, key.pem).
#[pyfunction]
#[pyo3(signature = (ca, out, spiffe_id, dns=Vec::new(), ips=Vec::new(), days=365, rsa=false))]
#[allow(clippy::too_many_arguments)]
pub fn ca_issue(
    py: Python<'_>,
    ca: PathBuf,
    out: PathBuf,
    spiffe_id: Option<String>,
    dns: Vec<String>,
    ips: Vec<String>,
    days: i64,
    rsa: bool,
) -> PyResult<(String, String)> {
    let ips = ips
        .iter()
        .map(|s| s.parse::<IpAddr>().map_err(|e| value_error(format!("{s:?} is not an IP address: {e}"))))
        .collect::<PyResult<Vec<_>>>()?;
    let req = IssueRequest { spiffe_id, dns, ips, days, rsa };
    let w = py.detach(|| devca::issue(&ca, &req, &out)).map_err(tls_error)?;
    Ok((w.cert.display().to_string(), w.key.display().to_string()))
}

/// The process's TLS counters as a dict (see `courier.tls_stats`).
#[pyfunction]
pub fn tls_stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let st = core_tls_stats();
    let handshakes = st
        .handshakes
        .iter()
        .map(|h| {
            let d = PyDict::new(py);
            d.set_item("side", h.side.as_str())?;
            d.set_item("peer", &h.peer)?;
            d.set_item("full", h.full)?;
            d.set_item("resumed", h.resumed)?;
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    let errors = st
        .errors
        .iter()
        .map(|e| {
            let d = PyDict::new(py);
            d.set_item("side", e.side.as_str())?;
            d.set_item("reason", e.reason.as_str())?;
            d.set_item("count", e.count)?;
            d.set_item("last_error", &e.last_error)?;
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    let out = PyDict::new(py);
    out.set_item("handshakes", handshakes)?;
    out.set_item("errors", errors)?;
    out.set_item("reloads_ok", st.reloads_ok)?;
    out.set_item("reloads_failed", st.reloads_failed)?;
    out.set_item("last_reload_error", st.last_reload_error)?;
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ServerTls>()?;
    m.add_class::<ClientTls>()?;
    m.add_function(wrap_pyfunction!(ca_init, m)?)?;
    m.add_function(wrap_pyfunction!(ca_issue, m)?)?;
    m.add_function(wrap_pyfunction!(tls_stats, m)?)?;
    Ok(())
}
