//! TLS on the same port as plain HTTP: `kubectl` and Helm send a bearer token only over TLS.
//!
//! Each server makes its own self-signed certificate for `localhost`, `127.0.0.1`, `::1` and the
//! names its options add. A
//! connection whose first byte is a TLS handshake record gets TLS; any other is served as plain HTTP.

use std::sync::Arc;

use tokio::net::TcpStream;

/// The server side of TLS, and the certificate clients trust.
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The self-signed certificate, PEM: what a kubeconfig's `certificate-authority-data` holds.
    pub certificate_pem: String,
}

/// Why no certificate could be made.
#[derive(Debug)]
pub enum TlsError {
    Certificate(rcgen::Error),
    Config(rustls::Error),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Certificate(e) => write!(f, "making the test certificate: {e}"),
            Self::Config(e) => write!(f, "configuring TLS: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl Tls {
    /// A certificate for the loopback names and `extra` names (host names or IP addresses).
    pub fn self_signed(extra: &[String]) -> Result<Self, TlsError> {
        let mut names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        names.extend(extra.iter().cloned());
        let key = rcgen::KeyPair::generate().map_err(TlsError::Certificate)?;
        let params = rcgen::CertificateParams::new(names).map_err(TlsError::Certificate)?;
        let certificate = params.self_signed(&key).map_err(TlsError::Certificate)?;
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der().clone()], key_der)
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Ok(Self { acceptor, certificate_pem: certificate.pem() })
    }

    /// Serves one connection, with TLS when it starts with a handshake record (content type 22).
    pub async fn serve(&self, stream: TcpStream, store: Arc<crate::Store>) {
        let mut first = [0u8; 1];
        let is_tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16);
        let service = hyper::service::service_fn(move |req| crate::http::handle(store.clone(), req));
        let http = hyper::server::conn::http1::Builder::new();
        if !is_tls {
            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        } else if let Ok(stream) = self.acceptor.accept(stream).await {
            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        }
    }
}
