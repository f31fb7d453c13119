//! What kubelink's admission webhooks share: the `admission.k8s.io/v1` AdmissionReview decoder, the
//! serving certificate (read again from its files, so a rotated Secret takes effect without a
//! restart), and a bounded HTTPS server.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use serde_json::Value;

/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 64;
/// A TLS handshake and a request head must be complete within this.
pub const HEADER_READ: Duration = Duration::from_secs(5);
/// A connection is closed after this, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How often the certificate files are read again (a rotated Secret reaches the mount later anyway).
const CERT_RELOAD: Duration = Duration::from_secs(60);

/// The largest AdmissionReview read. kube-apiserver and gardener-apiserver accept objects up to
/// 3 MiB (etcd's request limit); a review carries the object and, for an update, the old one.
pub const MAX_REVIEW_BYTES: usize = 7 << 20;

/// The parts of an `admission.k8s.io/v1` AdmissionReview request a webhook reads.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionRequest {
    pub uid: String,
    pub group: String,
    pub kind: String,
    pub operation: String,
    pub namespace: String,
    pub name: String,
    pub object: Value,
    pub old_object: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<RawRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    uid: String,
    kind: GroupVersionKind,
    operation: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    object: Value,
    #[serde(default)]
    old_object: Value,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    kind: String,
}

/// Decodes an AdmissionReview (`admission.k8s.io/v1` only, as the webhook registers it). An error
/// says what is wrong for the HTTP answer; nothing here panics, whatever the input.
pub fn decode(body: &[u8]) -> Result<AdmissionRequest, String> {
    if body.len() > MAX_REVIEW_BYTES {
        return Err(format!("the review is {} bytes, more than {MAX_REVIEW_BYTES}", body.len()));
    }
    let review: Review = serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
        return Err(format!(
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview, got {}/{}",
            kubelink_contract::excerpt(&review.api_version),
            kubelink_contract::excerpt(&review.kind)
        ));
    }
    let r = review.request.ok_or("the AdmissionReview has no request")?;
    if r.uid.is_empty() {
        return Err("the AdmissionReview's request has no uid".into());
    }
    Ok(AdmissionRequest {
        uid: r.uid,
        group: r.kind.group,
        kind: r.kind.kind,
        operation: r.operation,
        namespace: r.namespace,
        name: r.name,
        object: r.object,
        old_object: r.old_object,
    })
}

/// Reads the certificate chain and key, for rustls.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate in it", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}: not a PEM private key", key.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider).context("the certificate and the key do not belong together")
}

/// The serving certificate, read again from its files every [`CERT_RELOAD`].
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The TLS acceptor for `cert` and `key`, which follows changes of the files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let resolver = Arc::new(Reloading { current: RwLock::new(Arc::new(load_certified_key(cert, key)?)) });
    let (cert, key, watched) = (cert.to_path_buf(), key.to_path_buf(), resolver.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CERT_RELOAD).await;
            match load_certified_key(&cert, &key) {
                Ok(k) => *watched.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(k),
                Err(e) => tracing::warn!("serving certificate not reloaded, the last one stays: {e:#}"),
            }
        }
    });
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `handler` over HTTPS on `listener` until the process ends: at most [`MAX_CONNECTIONS`]
/// connections at once (more wait in the kernel's accept queue), a TLS handshake and each request
/// head within [`HEADER_READ`], a connection closed after [`CONNECTION_LIFETIME`].
pub async fn serve<H, F>(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        let (acceptor, handler) = (acceptor.clone(), handler.clone());
        tokio::spawn(async move {
            let connection = async {
                let tls = match tokio::time::timeout(HEADER_READ, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer}: {e}"),
                    Err(_) => return tracing::debug!("TLS handshake with {peer}: no handshake within {HEADER_READ:?}"),
                };
                let service = service_fn(move |req| {
                    let served = handler(req);
                    async move { Ok::<_, Infallible>(served.await) }
                });
                let mut http = http1::Builder::new();
                http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ);
                if let Err(e) = http.serve_connection(TokioIo::new(tls), service).await {
                    tracing::debug!("connection from {peer}: {e}");
                }
            };
            if tokio::time::timeout(CONNECTION_LIFETIME, connection).await.is_err() {
                tracing::debug!("connection from {peer} closed after {CONNECTION_LIFETIME:?}");
            }
            drop(permit);
        });
    }
}

/// A plain HTTP answer.
pub fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}

/// The AdmissionReview of `POST <path>`, or the answer to give instead: `/healthz` for probes, 404
/// for anything else, 413 past [`MAX_REVIEW_BYTES`], 400 for what is not a review.
pub async fn review_of(req: Request<Incoming>, path: &str) -> Result<AdmissionRequest, Response<Full<Bytes>>> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => return Err(answer(StatusCode::OK, "text/plain", "ok\n".into())),
        ("POST", p) if p == path => {}
        _ => return Err(answer(StatusCode::NOT_FOUND, "text/plain", format!("POST an AdmissionReview to {path}\n"))),
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Err(answer(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", format!("reading the review: {e}\n")));
        }
    };
    decode(&body).map_err(|e| answer(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")))
}
