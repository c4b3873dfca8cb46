//! SPIFFE IDs: parsing, reading one from a certificate's URI SAN, matching a
//! peer against what a client expects.

use std::fmt;
use std::str::FromStr;

use crate::context::Identity;

const SCHEME: &str = "spiffe://";

/// Why a certificate does not carry a usable SPIFFE ID, or a peer is not the
/// one expected. Carried inside rustls' `CertificateError::Other`, so the
/// handshake error classifier and the user see the precise cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityError {
    /// No URI SAN with the `spiffe` scheme.
    NoSpiffeId { subject: String },
    /// More than one URI SAN: an X.509-SVID has exactly one.
    SeveralUris { subject: String, uris: Vec<String> },
    /// A URI SAN that is not a valid SPIFFE ID.
    Invalid { id: String, why: String },
    /// The server is not the identity the client expects.
    Mismatch { expected: String, got: String },
    /// The certificate could not be parsed.
    Unparsable(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::NoSpiffeId { subject } => write!(
                f,
                "certificate ({subject}) has no SPIFFE ID: expected a URI SAN spiffe://<trust-domain>/<name>"
            ),
            IdentityError::SeveralUris { subject, uris } => {
                write!(f, "certificate ({subject}) has {} URI SANs ({}): a SPIFFE certificate has exactly one", uris.len(), uris.join(", "))
            }
            IdentityError::Invalid { id, why } => write!(f, "invalid SPIFFE ID {id:?}: {why}"),
            IdentityError::Mismatch { expected, got } => {
                write!(f, "server identity mismatch: expected {expected}, got {got}")
            }
            IdentityError::Unparsable(why) => write!(f, "cannot parse certificate: {why}"),
        }
    }
}

impl std::error::Error for IdentityError {}

fn valid_trust_domain(td: &str) -> Result<(), String> {
    if td.is_empty() {
        return Err("the trust domain is empty".into());
    }
    if td.len() > 255 {
        return Err("the trust domain is longer than 255 characters".into());
    }
    if let Some(c) = td.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))) {
        return Err(format!("the trust domain has the character {c:?} (allowed: a-z 0-9 . - _)"));
    }
    Ok(())
}

fn valid_path(path: &str) -> Result<(), String> {
    for seg in path.split('/') {
        if seg.is_empty() {
            return Err("the path has an empty segment (double or trailing slash)".into());
        }
        if seg == "." || seg == ".." {
            return Err("the path has a '.' or '..' segment".into());
        }
        if let Some(c) = seg.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
            return Err(format!("the path has the character {c:?} (allowed: A-Z a-z 0-9 . - _)"));
        }
    }
    Ok(())
}

/// Splits a SPIFFE ID (per the SPIFFE ID spec) into trust domain and path
/// (without its leading slash; empty for a trust-domain ID).
fn split(id: &str) -> Result<(&str, &str), String> {
    let rest = id.strip_prefix(SCHEME).ok_or_else(|| "it does not start with spiffe://".to_string())?;
    if id.len() > 2048 {
        return Err("it is longer than 2048 bytes".into());
    }
    if rest.contains(['?', '#']) {
        return Err("it has a query or fragment".into());
    }
    let (td, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    if td.contains([':', '@']) {
        return Err("the trust domain has a port or user info".into());
    }
    valid_trust_domain(td)?;
    if rest.len() > td.len() {
        valid_path(path)?;
    }
    Ok((td, path))
}

/// Parses a workload SPIFFE ID (`spiffe://<trust-domain>/<name>`) into an
/// [`Identity`]; `name` is the path without its leading slash.
pub fn parse_spiffe_id(id: &str) -> Result<Identity, IdentityError> {
    let invalid = |why: String| IdentityError::Invalid { id: id.to_string(), why };
    let (_, path) = split(id).map_err(invalid)?;
    if path.is_empty() {
        return Err(invalid("it names a trust domain, not a workload (no path)".into()));
    }
    Ok(Identity { spiffe_id: id.to_string(), name: path.to_string() })
}

/// The trust domain of a verified identity.
pub(crate) fn trust_domain_of(id: &Identity) -> &str {
    let rest = &id.spiffe_id[SCHEME.len()..];
    rest.split('/').next().unwrap_or(rest)
}

/// Which server a client accepts: one exact SPIFFE ID, or any identity in a
/// trust domain (`spiffe://example.org`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedIdentity {
    Exact(String),
    TrustDomain(String),
}

impl ExpectedIdentity {
    pub fn matches(&self, id: &Identity) -> bool {
        match self {
            ExpectedIdentity::Exact(e) => *e == id.spiffe_id,
            ExpectedIdentity::TrustDomain(td) => trust_domain_of(id) == td,
        }
    }
}

impl FromStr for ExpectedIdentity {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        let (td, path) = split(s).map_err(|why| IdentityError::Invalid { id: s.to_string(), why })?;
        Ok(if path.is_empty() { ExpectedIdentity::TrustDomain(td.to_string()) } else { ExpectedIdentity::Exact(s.to_string()) })
    }
}

impl fmt::Display for ExpectedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedIdentity::Exact(id) => f.write_str(id),
            ExpectedIdentity::TrustDomain(td) => write!(f, "any identity in spiffe://{td}"),
        }
    }
}

/// The URI SANs of a DER certificate, with its subject for messages.
fn uri_sans(der: &[u8]) -> Result<(String, Vec<String>), IdentityError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    let subject = cert.subject().to_string();
    let subject = if subject.is_empty() { "empty subject".to_string() } else { subject };
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::URI(u) = n {
                uris.push((*u).to_string());
            }
        }
    }
    Ok((subject, uris))
}

/// The SPIFFE ID of a (verified) leaf certificate: exactly one URI SAN, a
/// valid workload SPIFFE ID.
pub fn identity_of_cert(der: &[u8]) -> Result<Identity, IdentityError> {
    let (subject, uris) = uri_sans(der)?;
    match uris.as_slice() {
        [] => Err(IdentityError::NoSpiffeId { subject }),
        [one] if !one.to_ascii_lowercase().starts_with(SCHEME) => Err(IdentityError::NoSpiffeId { subject }),
        [one] => parse_spiffe_id(one),
        _ => Err(IdentityError::SeveralUris { subject, uris }),
    }
}

/// Identities of recently seen certificates: reconnecting peers present the
/// same certificate, so it is parsed once, not on every handshake (a resumed
/// TLS 1.2 handshake costs ~80 us of server CPU; parsing is a few of them).
#[derive(Default)]
pub(crate) struct IdentityCache {
    map: std::sync::Mutex<std::collections::HashMap<Box<[u8]>, std::sync::Arc<Identity>>>,
}

impl IdentityCache {
    const MAX: usize = 4096;

    pub(crate) fn identity(&self, der: &[u8]) -> Result<std::sync::Arc<Identity>, IdentityError> {
        if let Some(id) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(der) {
            return Ok(id.clone());
        }
        let id = std::sync::Arc::new(identity_of_cert(der)?);
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= Self::MAX {
            m.clear();
        }
        m.insert(der.into(), id.clone());
        Ok(id)
    }
}

impl std::fmt::Debug for IdentityCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityCache")
    }
}

/// The trust domain a CA certificate names in its URI SAN (`spiffe://<td>`),
/// if any: the dev CA writes one.
pub(crate) fn trust_domain_of_ca(der: &[u8]) -> Option<String> {
    let (_, uris) = uri_sans(der).ok()?;
    uris.iter().find_map(|u| match u.parse::<ExpectedIdentity>() {
        Ok(ExpectedIdentity::TrustDomain(td)) => Some(td),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_ids() {
        let id = parse_spiffe_id("spiffe://example.org/ns/prod/sa/web").unwrap();
        assert_eq!(id.name, "ns/prod/sa/web");
        assert_eq!(trust_domain_of(&id), "example.org");
        for bad in [
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://Example.org/a",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/../b",
            "spiffe://example.org:8080/a",
            "spiffe://example.org/a?x=1",
            "https://example.org/a",
            "spiffe:///a",
            "spiffe://example.org/a b",
        ] {
            assert!(parse_spiffe_id(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn expected_identity() {
        let a = parse_spiffe_id("spiffe://example.org/a").unwrap();
        let other = parse_spiffe_id("spiffe://other.org/a").unwrap();
        let exact: ExpectedIdentity = "spiffe://example.org/a".parse().unwrap();
        let domain: ExpectedIdentity = "spiffe://example.org".parse().unwrap();
        assert!(exact.matches(&a) && domain.matches(&a));
        assert!(!exact.matches(&other) && !domain.matches(&other));
        assert!("example.org".parse::<ExpectedIdentity>().is_err());
        let e = IdentityError::Mismatch { expected: exact.to_string(), got: other.spiffe_id.clone() };
        assert_eq!(e.to_string(), "server identity mismatch: expected spiffe://example.org/a, got spiffe://other.org/a");
    }
}
