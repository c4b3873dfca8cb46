//! Certificate verifiers: webpki chain checks (rustls' own) plus the SPIFFE
//! rules. The server checks that a client certificate carries a SPIFFE ID;
//! the client checks the server's SPIFFE ID instead of a DNS name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore, SignatureScheme};

use super::chain_cache::{Lookup, VerifiedChains};
use super::identity::{identity_of_cert, ExpectedIdentity, IdentityCache, IdentityError};

fn identity_error(e: IdentityError) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// rustls' webpki client verifier, plus: the client certificate must carry a
/// valid SPIFFE ID. Chains that passed both are remembered (bounded, inside
/// their validity, per CA: see `chain_cache`), so a client that presents the
/// same chain again skips the CA signature check; its CertificateVerify
/// signature is still checked on every handshake.
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) identities: Arc<IdentityCache>,
    pub(crate) verified: VerifiedChains,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let key = match self.verified.check(end_entity, intermediates, now) {
            Lookup::Hit => return Ok(ClientCertVerified::assertion()),
            Lookup::Miss(key) => key,
        };
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.identities.identity(end_entity).map_err(identity_error)?;
        if let Some(key) = key {
            self.verified.insert(key, end_entity, intermediates, now);
        }
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies the server's chain against our CA, then its SPIFFE ID against the
/// expected one. The name the client dialled (IP or DNS) plays no part.
#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) expected: ExpectedIdentity,
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&cert, &self.roots, intermediates, now, self.algs.all)?;
        let got = identity_of_cert(end_entity).map_err(identity_error)?;
        if !self.expected.matches(&got) {
            return Err(identity_error(IdentityError::Mismatch { expected: self.expected.to_string(), got: got.spiffe_id }));
        }
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
