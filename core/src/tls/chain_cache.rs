//! Client certificate chains the server has verified recently.
//!
//! A full mutual-TLS handshake with an ECDSA P-256 client costs the server two
//! ECDSA verifications: the CA's signature over the client's certificate
//! (chain verification) and the client's CertificateVerify signature over the
//! handshake transcript. Only the first depends on nothing but the
//! certificates, the trust anchors and the time, so its result can be reused
//! when the same client presents the same chain again (a client that does not
//! resume, a new channel, a restarted client process, an expired ticket).
//!
//! What is kept, and why that weakens no check:
//! - The key is SHA-256 over the exact chain presented (end-entity DER and
//!   every intermediate, each length-prefixed): a different certificate, or
//!   the same certificate with other intermediates, never hits.
//! - Only chains that passed webpki verification (trust anchor, signatures,
//!   client-auth usage, name constraints) *and* the SPIFFE check are stored.
//! - Each entry remembers the validity window of the chain (latest notBefore,
//!   earliest notAfter): a hit is honoured only inside it, so a certificate
//!   that expired since it was cached is verified again and refused as expired.
//! - Entries older than the cache's max age are verified again; the cache is
//!   bounded in entries (the oldest go first).
//! - One cache per verifier, and the verifier is rebuilt whenever the CA,
//!   certificate or key files change (rotation): chains verified under an old
//!   CA are never reused under a new one.
//! - The CertificateVerify signature (proof of possession of the private key,
//!   over this handshake's transcript) is checked on every handshake; it does
//!   not go through this cache.
//! - Only verified chains get in, so a peer without a valid certificate
//!   cannot fill the cache.
//!
//! Courier configures no revocation lists. If it ever does, a CRL change must
//! rebuild the verifier (as a CA change does), and the max age bounds how late
//! a revocation takes effect for a cached chain.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, UnixTime};

type Key = [u8; 32];

/// The answer of [`VerifiedChains::check`].
pub(crate) enum Lookup {
    /// Verified before, still valid now: skip chain verification.
    Hit,
    /// Verify in full; then record the chain under this key (`None`: the cache
    /// is off).
    Miss(Option<Key>),
}

struct Entry {
    /// The chain is valid for `not_before <= now <= not_after` (Unix seconds).
    not_before: u64,
    not_after: u64,
    inserted: Instant,
    /// Matches the insertion-order queue's record of this entry.
    seq: u64,
}

#[derive(Default)]
struct Map {
    entries: HashMap<Key, Entry>,
    /// Insertion order, for evicting the oldest when full.
    order: VecDeque<(Key, u64)>,
    seq: u64,
}

/// A bounded cache of verified client chains. `max_entries == 0` disables it.
pub(crate) struct VerifiedChains {
    map: Mutex<Map>,
    max_entries: usize,
    max_age: Duration,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
}

impl std::fmt::Debug for VerifiedChains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedChains").field("max_entries", &self.max_entries).field("max_age", &self.max_age).finish()
    }
}

/// SHA-256 of the presented chain, each certificate prefixed by its length.
fn chain_key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Key {
    let sha256 = match rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256 {
        rustls::SupportedCipherSuite::Tls13(s) => s.common.hash_provider,
        rustls::SupportedCipherSuite::Tls12(s) => s.common.hash_provider,
    };
    let mut h = sha256.start();
    for c in std::iter::once(end_entity).chain(intermediates) {
        h.update(&(c.len() as u64).to_be_bytes());
        h.update(c);
    }
    let out = h.finish();
    let mut key = [0u8; 32];
    key.copy_from_slice(&out.as_ref()[..32]);
    key
}

/// (latest notBefore, earliest notAfter) over the chain, in Unix seconds;
/// `None` if a certificate does not parse (then nothing is cached).
fn validity(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Option<(u64, u64)> {
    use x509_parser::prelude::*;
    let mut window = (0u64, u64::MAX);
    for c in std::iter::once(end_entity).chain(intermediates) {
        let (_, cert) = X509Certificate::from_der(c).ok()?;
        let v = cert.validity();
        let nb = u64::try_from(v.not_before.timestamp()).unwrap_or(0);
        let na = u64::try_from(v.not_after.timestamp()).ok()?;
        window = (window.0.max(nb), window.1.min(na));
    }
    Some(window)
}

impl VerifiedChains {
    pub(crate) fn new(max_entries: usize, max_age: Duration) -> VerifiedChains {
        VerifiedChains {
            map: Mutex::new(Map::default()),
            max_entries,
            max_age,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether this exact chain was verified before and is still inside its
    /// validity window at `now` and younger than the max age. A stale entry is
    /// dropped (the caller then verifies the chain in full).
    pub(crate) fn check(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], now: UnixTime) -> Lookup {
        if self.max_entries == 0 {
            return Lookup::Miss(None);
        }
        let key = chain_key(end_entity, intermediates);
        let t = now.as_secs();
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = match m.entries.get(&key) {
            None => None,
            Some(e) => Some(e.not_before <= t && t <= e.not_after && e.inserted.elapsed() < self.max_age),
        };
        match fresh {
            Some(true) => {
                drop(m);
                self.hits.fetch_add(1, Ordering::Relaxed);
                super::stats::count_chain_cache(true);
                return Lookup::Hit;
            }
            Some(false) => {
                m.entries.remove(&key);
            }
            None => {}
        }
        drop(m);
        self.misses.fetch_add(1, Ordering::Relaxed);
        super::stats::count_chain_cache(false);
        Lookup::Miss(Some(key))
    }

    /// Records a chain that has just passed full verification at `now`.
    pub(crate) fn insert(&self, key: Key, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], now: UnixTime) {
        let Some((not_before, not_after)) = validity(end_entity, intermediates) else { return };
        let t = now.as_secs();
        if !(not_before <= t && t <= not_after) {
            return;
        }
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        while m.entries.len() >= self.max_entries {
            let Some((old, seq)) = m.order.pop_front() else { break };
            if m.entries.get(&old).is_some_and(|e| e.seq == seq) {
                m.entries.remove(&old);
            }
        }
        m.seq += 1;
        let seq = m.seq;
        m.entries.insert(key, Entry { not_before, not_after, inserted: Instant::now(), seq });
        m.order.push_back((key, seq));
        // Records of entries removed or replaced since: keep the queue bounded too.
        if m.order.len() > 2 * self.max_entries.max(8) {
            let Map { entries, order, .. } = &mut *m;
            order.retain(|(k, s)| entries.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::danger::ClientCertVerifier;
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

    use super::super::devca::{self, IssueRequest};
    use super::super::identity::IdentityCache;
    use super::super::verify::SpiffeClientVerifier;
    use super::super::{load_certs, load_roots, provider, KeyExchange};
    use super::VerifiedChains;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tmp(tag: &str) -> Tmp {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("courier-chain-cache-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    fn ca(dir: &Path) -> PathBuf {
        devca::init_ca("example.org", dir, 30).unwrap();
        dir.to_path_buf()
    }

    fn leaf(ca_dir: &Path, out: &Path, days: i64) -> CertificateDer<'static> {
        let mut r = IssueRequest::new("spiffe://example.org/client");
        r.days = days;
        let w = devca::issue(ca_dir, &r, out).unwrap();
        load_certs("certificate", &w.cert).unwrap().remove(0)
    }

    fn verifier(ca_dir: &Path, max_entries: usize, max_age: Duration) -> SpiffeClientVerifier {
        let roots = Arc::new(load_roots(&ca_dir.join(devca::CA_CERT)).unwrap());
        let inner = WebPkiClientVerifier::builder_with_provider(roots, Arc::new(provider(KeyExchange::Classical))).build().unwrap();
        SpiffeClientVerifier { inner, identities: Arc::new(IdentityCache::default()), verified: VerifiedChains::new(max_entries, max_age) }
    }

    fn counts(v: &SpiffeClientVerifier) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (v.verified.hits.load(Relaxed), v.verified.misses.load(Relaxed))
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn second_presentation_of_a_chain_hits() {
        let t = tmp("hit");
        let a = ca(&t.0.join("ca"));
        let c = leaf(&a, &t.0.join("c"), 30);
        let v = verifier(&a, 16, MIN);
        let now = UnixTime::now();
        v.verify_client_cert(&c, &[], now).unwrap();
        assert_eq!(counts(&v), (0, 1));
        v.verify_client_cert(&c, &[], now).unwrap();
        assert_eq!(counts(&v), (1, 1));
        // The same end entity with other intermediates is another chain.
        let extra = load_certs("CA", &a.join(devca::CA_CERT)).unwrap();
        v.verify_client_cert(&c, &extra, now).unwrap();
        assert_eq!(counts(&v), (1, 2));
    }

    #[test]
    fn an_expired_certificate_is_refused_even_if_cached_before_expiry() {
        let t = tmp("expiry");
        let a = ca(&t.0.join("ca"));
        let c = leaf(&a, &t.0.join("c"), 1);
        let v = verifier(&a, 16, Duration::from_secs(1_000_000));
        let now = UnixTime::now();
        v.verify_client_cert(&c, &[], now).unwrap();
        v.verify_client_cert(&c, &[], now).unwrap();
        assert_eq!(counts(&v), (1, 1));
        let later = UnixTime::since_unix_epoch(Duration::from_secs(now.as_secs() + 2 * 86_400));
        let e = v.verify_client_cert(&c, &[], later).unwrap_err();
        assert!(
            matches!(e, Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })),
            "{e:?}"
        );
        assert_eq!(counts(&v), (1, 2));
        // And a stale entry is gone, not just skipped.
        assert_eq!(v.verified.len(), 0);
    }

    #[test]
    fn a_certificate_of_another_ca_never_hits() {
        let t = tmp("other-ca");
        let a = ca(&t.0.join("a"));
        let b = ca(&t.0.join("b"));
        let ca_ok = leaf(&a, &t.0.join("ca"), 30);
        let cb = leaf(&b, &t.0.join("cb"), 30);
        let v = verifier(&a, 16, MIN);
        let now = UnixTime::now();
        v.verify_client_cert(&ca_ok, &[], now).unwrap();
        for _ in 0..2 {
            let e = v.verify_client_cert(&cb, &[], now).unwrap_err();
            assert!(matches!(e, Error::InvalidCertificate(CertificateError::UnknownIssuer)), "{e:?}");
        }
        assert_eq!(counts(&v), (0, 3));
        assert_eq!(v.verified.len(), 1, "a refused chain is not recorded");
    }

    #[test]
    fn max_age_size_bound_and_off() {
        let t = tmp("bounds");
        let a = ca(&t.0.join("ca"));
        let certs: Vec<_> = (0..3).map(|i| leaf(&a, &t.0.join(format!("c{i}")), 30)).collect();
        let now = UnixTime::now();
        // Max age zero: every presentation is verified in full.
        let v = verifier(&a, 16, Duration::ZERO);
        for _ in 0..2 {
            v.verify_client_cert(&certs[0], &[], now).unwrap();
        }
        assert_eq!(counts(&v), (0, 2));
        // Two entries at most: the oldest goes.
        let v = verifier(&a, 2, MIN);
        for c in &certs {
            v.verify_client_cert(c, &[], now).unwrap();
        }
        assert_eq!(v.verified.len(), 2);
        v.verify_client_cert(&certs[2], &[], now).unwrap();
        v.verify_client_cert(&certs[0], &[], now).unwrap();
        assert_eq!(counts(&v), (1, 4));
        // Off: verified in full every time, nothing counted or kept.
        let v = verifier(&a, 0, MIN);
        for _ in 0..2 {
            v.verify_client_cert(&certs[0], &[], now).unwrap();
        }
        assert_eq!(counts(&v), (0, 0));
        assert_eq!(v.verified.len(), 0);
    }

    #[test]
    fn certificate_verify_is_checked_on_a_cache_hit() {
        let t = tmp("cv");
        let a = ca(&t.0.join("ca"));
        let c = leaf(&a, &t.0.join("c"), 30);
        let v = verifier(&a, 16, MIN);
        let now = UnixTime::now();
        v.verify_client_cert(&c, &[], now).unwrap();
        v.verify_client_cert(&c, &[], now).unwrap();
        assert_eq!(counts(&v), (1, 1));
        // A signature that is not the client's over this transcript is refused.
        use rustls::internal::msgs::codec::Codec;
        let scheme = u16::from(SignatureScheme::ECDSA_NISTP256_SHA256).to_be_bytes();
        let wire = [scheme[0], scheme[1], 0, 8, 0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];
        let bad = DigitallySignedStruct::read_bytes(&wire).unwrap();
        assert!(v.verify_tls13_signature(b"transcript", &c, &bad).is_err());
    }
}
