//! `kubelink garden-admission`: the garden's validating webhook for Seeds and ManagedSeeds (GEP-14's
//! parent-seed rule, [`review`]). It runs next to the garden as Gardener's extension admission
//! components do, serves HTTPS with the certificate and key files it is given, and reads Shoots,
//! Seeds and ManagedSeeds from the garden with the kubeconfig gardener-operator injects
//! (`GARDEN_KUBECONFIG`), whose ServiceAccount may only `get` those three.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once, a request head within 5 s, a body of at
//! most [`review::MAX_REVIEW_BYTES`], a connection closed after 60 s, each garden read within 5 s.

pub mod review;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::Value;

use review::{Garden, Ref};

/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 64;
const HEADER_READ: Duration = Duration::from_secs(5);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
const GARDEN_READ: Duration = Duration::from_secs(5);
/// How often the certificate files are read again (a rotated Secret reaches the mount later anyway).
const CERT_RELOAD: Duration = Duration::from_secs(60);

#[derive(clap::Args, Clone, Debug)]
pub struct GardenAdmissionArgs {
    /// Where to serve HTTPS (the webhook's Service targets this port).
    #[arg(long, env = "KUBELINK_ADMISSION_LISTEN", default_value = "0.0.0.0:10250")]
    pub listen: SocketAddr,
    /// The serving certificate (PEM, the chain after it), e.g. a mounted Secret's `tls.crt`.
    #[arg(long, env = "KUBELINK_ADMISSION_TLS_CERT_FILE")]
    pub tls_cert_file: PathBuf,
    /// The serving certificate's private key (PEM), e.g. a mounted Secret's `tls.key`.
    #[arg(long, env = "KUBELINK_ADMISSION_TLS_KEY_FILE")]
    pub tls_key_file: PathBuf,
    /// Kubeconfig of the (virtual) garden: what gardener-operator injects into admission components
    /// (`GARDEN_KUBECONFIG`). Read only: Shoots, Seeds and ManagedSeeds, by name.
    #[arg(long, env = "GARDEN_KUBECONFIG")]
    pub kubeconfig: PathBuf,
}

/// The garden through a kube client.
pub struct KubeGarden {
    client: kube::Client,
}

impl KubeGarden {
    pub fn new(client: kube::Client) -> Self {
        KubeGarden { client }
    }
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

impl Garden for KubeGarden {
    async fn get(&self, what: &Ref) -> Result<Option<Value>, String> {
        let (api, name): (Api<DynamicObject>, &str) = match what {
            Ref::Shoot { namespace, name } => {
                let r = resource("core.gardener.cloud", "v1beta1", "Shoot", "shoots");
                (Api::namespaced_with(self.client.clone(), namespace, &r), name)
            }
            Ref::Seed { name } => {
                (Api::all_with(self.client.clone(), &resource("core.gardener.cloud", "v1beta1", "Seed", "seeds")), name)
            }
            Ref::ManagedSeed { namespace, name } => {
                let r = resource("seedmanagement.gardener.cloud", "v1alpha1", "ManagedSeed", "managedseeds");
                (Api::namespaced_with(self.client.clone(), namespace, &r), name)
            }
        };
        match tokio::time::timeout(GARDEN_READ, api.get_opt(name)).await {
            Err(_) => Err(format!("no answer within {GARDEN_READ:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(None)) => Ok(None),
            Ok(Ok(Some(obj))) => serde_json::to_value(obj).map(Some).map_err(|e| e.to_string()),
        }
    }
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

/// Serves the webhook on `listener` until the process ends.
pub async fn serve<G: Garden + Send + Sync + 'static>(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    garden: Arc<G>,
) {
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
        let (acceptor, garden) = (acceptor.clone(), garden.clone());
        tokio::spawn(async move {
            let connection = async {
                let tls = match tokio::time::timeout(HEADER_READ, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer}: {e}"),
                    Err(_) => return tracing::debug!("TLS handshake with {peer}: no handshake within {HEADER_READ:?}"),
                };
                let service = service_fn(move |req| {
                    let garden = garden.clone();
                    async move { Ok::<_, Infallible>(handle(&*garden, req).await) }
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

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}

/// One HTTP request: `POST /validate` with an AdmissionReview; `/healthz` for probes.
pub async fn handle<G: Garden>(garden: &G, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/healthz") => return answer(StatusCode::OK, "text/plain", "ok\n".into()),
        ("POST", "/validate") => {}
        _ => return answer(StatusCode::NOT_FOUND, "text/plain", "POST an AdmissionReview to /validate\n".into()),
    }
    let body = match Limited::new(req.into_body(), review::MAX_REVIEW_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return answer(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", format!("reading the review: {e}\n")),
    };
    let request = match review::decode(&body) {
        Ok(r) => r,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
    };
    let verdict = review::decide(garden, &request).await;
    let (kind, namespace, name) = (&request.kind, &request.namespace, &request.name);
    match &verdict.message {
        Some(why) => tracing::info!(%kind, %namespace, %name, operation = %request.operation, "refused: {why}"),
        None => tracing::debug!(%kind, %namespace, %name, operation = %request.operation, "allowed"),
    }
    answer(StatusCode::OK, "application/json", review::response(&request.uid, &verdict).to_string())
}

/// `kubelink garden-admission`.
pub async fn run(args: GardenAdmissionArgs) -> anyhow::Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("the garden kubeconfig {}", args.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.context("the garden kubeconfig")?;
    let client = kube::Client::try_from(config).context("building the garden client")?;
    let acceptor = tls_acceptor(&args.tls_cert_file, &args.tls_key_file)?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "garden admission webhook serving POST /validate");
    serve(listener, acceptor, Arc::new(KubeGarden::new(client))).await;
    Ok(())
}
