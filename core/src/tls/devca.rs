//! The development CA (`courier ca init` / `courier ca issue`): a self-signed
//! CA for one trust domain and leaf certificates carrying a SPIFFE ID, made
//! with rcgen. For development and tests; production identities come from the
//! organisation's CA (SPIRE or similar), which Courier reads the same way.
//!
//! Files: `DIR/ca.pem` + `DIR/ca.key` for the CA, `DIR/cert.pem` + `DIR/key.pem`
//! for an issued identity. Keys are written mode 0600, every file atomically
//! (rename), so a watching server never reads half a file.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, RsaKeySize, SanType, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
};
use time::{Duration, OffsetDateTime};

use super::identity::{parse_spiffe_id, trust_domain_of, trust_domain_of_ca, ExpectedIdentity};
use super::TlsError;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
pub const CERT: &str = "cert.pem";
pub const KEY: &str = "key.pem";

/// Paths of a written certificate and its key.
#[derive(Clone, Debug)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn rcgen_err(what: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Config(format!("{what}: {e}"))
}

fn write_atomic(path: &Path, data: &[u8], private: bool) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write { path: path.to_path_buf(), source };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn new_key(rsa: bool) -> Result<KeyPair, TlsError> {
    if rsa {
        KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).map_err(rcgen_err("cannot generate an RSA 2048 key"))
    } else {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err("cannot generate an ECDSA P-256 key"))
    }
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String, TlsError> {
    rcgen::string::Ia5String::try_from(s.to_string()).map_err(|e| TlsError::Config(format!("{s:?} is not ASCII: {e}")))
}

/// Creates a CA for `trust_domain` in `out` (ca.pem, ca.key); valid `days`.
/// Refuses to overwrite an existing CA key. ECDSA P-256.
pub fn init_ca(trust_domain: &str, out: &Path, days: u32) -> Result<Written, TlsError> {
    init_ca_with_key(trust_domain, out, days, false)
}

/// [`init_ca`] with an RSA 2048 CA key when `rsa` (benchmarks of an all-RSA
/// deployment, tests).
pub fn init_ca_with_key(trust_domain: &str, out: &Path, days: u32, rsa: bool) -> Result<Written, TlsError> {
    let td = trust_domain.strip_prefix("spiffe://").unwrap_or(trust_domain);
    match format!("spiffe://{td}").parse::<ExpectedIdentity>() {
        Ok(ExpectedIdentity::TrustDomain(_)) => {}
        Ok(ExpectedIdentity::Exact(_)) => {
            return Err(TlsError::Config(format!("{trust_domain:?} is a trust domain with a path: give only the domain, e.g. example.org")))
        }
        Err(e) => return Err(e.into()),
    }
    std::fs::create_dir_all(out).map_err(|source| TlsError::Write { path: out.to_path_buf(), source })?;
    let (cert_path, key_path) = (out.join(CA_CERT), out.join(CA_KEY));
    if key_path.exists() {
        return Err(TlsError::Config(format!("{} exists: refusing to overwrite a CA key", key_path.display())));
    }
    let key = new_key(rsa)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Courier dev CA");
    // A per-CA tag: two dev CAs of one trust domain must not share a subject,
    // or a certificate of one would be matched to the other by name and fail
    // as a bad signature instead of an unknown CA.
    let tag: String = key.public_key_raw().iter().rev().take(4).map(|b| format!("{b:02x}")).collect();
    dn.push(DnType::CommonName, format!("Courier dev CA for {td} ({tag})"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    // The SPIFFE trust-domain ID, so `issue` can check leaf IDs against it.
    p.subject_alt_names = vec![SanType::URI(ia5(&format!("spiffe://{td}"))?)];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(days.max(1).into());
    let cert = p.self_signed(&key).map_err(rcgen_err("cannot sign the CA certificate"))?;
    write_atomic(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), false)?;
    Ok(Written { cert: cert_path, key: key_path })
}

/// What to put in an issued certificate.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// `spiffe://<trust-domain>/<name>`, in the CA's trust domain. `None` makes
    /// a certificate without one (only useful to test that it is refused).
    pub spiffe_id: Option<String>,
    /// DNS and IP SANs, for peers that check host names (stock gRPC clients).
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Validity from now; zero or negative makes an already expired
    /// certificate (for tests of that case).
    pub days: i64,
    /// RSA 2048 instead of ECDSA P-256.
    pub rsa: bool,
}

impl IssueRequest {
    pub fn new(spiffe_id: &str) -> IssueRequest {
        IssueRequest { spiffe_id: Some(spiffe_id.to_string()), dns: Vec::new(), ips: Vec::new(), days: 365, rsa: false }
    }
}

/// Issues a certificate signed by the CA in `ca_dir`, written to `out`
/// (cert.pem, key.pem; replaced if present, which is how rotation looks).
pub fn issue(ca_dir: &Path, req: &IssueRequest, out: &Path) -> Result<Written, TlsError> {
    let ca_cert_path = ca_dir.join(CA_CERT);
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_pem = std::fs::read_to_string(&ca_cert_path)
        .map_err(|source| TlsError::Read { what: "CA", path: ca_cert_path.clone(), source })?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_path)
        .map_err(|source| TlsError::Read { what: "CA key", path: ca_key_path.clone(), source })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Invalid { what: "CA key", path: ca_key_path, why: e.to_string() })?;
    let ca_der = super::load_certs("CA", &ca_cert_path)?.remove(0);
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| TlsError::Invalid { what: "CA", path: ca_cert_path.clone(), why: e.to_string() })?;

    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    match &req.spiffe_id {
        Some(id) => {
            let ident = parse_spiffe_id(id)?;
            if let Some(td) = trust_domain_of_ca(&ca_der) {
                if trust_domain_of(&ident) != td {
                    return Err(TlsError::Config(format!("{id} is not in the CA's trust domain spiffe://{td}")));
                }
            }
            dn.push(DnType::CommonName, ident.name.clone());
            p.subject_alt_names.push(SanType::URI(ia5(id)?));
        }
        None => dn.push(DnType::CommonName, "no SPIFFE ID"),
    }
    p.distinguished_name = dn;
    for d in &req.dns {
        p.subject_alt_names.push(SanType::DnsName(ia5(d)?));
    }
    for ip in &req.ips {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if req.rsa {
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    // One identity serves both ends of mutual TLS.
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    p.not_after = now + Duration::days(req.days);
    p.not_before = (now - Duration::hours(1)).min(p.not_after - Duration::days(1));
    let key = new_key(req.rsa)?;
    let cert = p.signed_by(&key, &issuer).map_err(rcgen_err("cannot sign the certificate"))?;
    std::fs::create_dir_all(out).map_err(|source| TlsError::Write { path: out.to_path_buf(), source })?;
    let (cert_path, key_path) = (out.join(CERT), out.join(KEY));
    write_atomic(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), false)?;
    Ok(Written { cert: cert_path, key: key_path })
}
