//! `kubelink garden-admission`: the garden's validating webhook for Seeds and ManagedSeeds (GEP-14's
//! parent-seed rule, [`review`]). It runs next to the garden as Gardener's extension admission
//! components do, serves HTTPS with the certificate and key files it is given, and reads Shoots,
//! Seeds and ManagedSeeds from the garden with the kubeconfig gardener-operator injects
//! (`GARDEN_KUBECONFIG`), whose ServiceAccount may only `get` those three.
//!
//! Bounded as every kubelink webhook ([`crate::webhook`]), and each garden read within 5 s.

pub mod review;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use kube::Api;
use kube::api::{ApiResource, DynamicObject};
use serde_json::Value;

use crate::webhook;

use review::{Garden, Ref};

const GARDEN_READ: Duration = Duration::from_secs(5);

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

/// One HTTP request: `POST /validate` with an AdmissionReview; `/healthz` for probes.
pub async fn handle<G: Garden>(garden: &G, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let request = match webhook::review_of(req, "/validate").await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let verdict = review::decide(garden, &request).await;
    let (kind, namespace, name) = (&request.kind, &request.namespace, &request.name);
    match &verdict.message {
        Some(why) => tracing::info!(%kind, %namespace, %name, operation = %request.operation, "refused: {why}"),
        None => tracing::debug!(%kind, %namespace, %name, operation = %request.operation, "allowed"),
    }
    webhook::answer(StatusCode::OK, "application/json", review::response(&request.uid, &verdict).to_string())
}

/// `kubelink garden-admission`.
pub async fn run(args: GardenAdmissionArgs) -> anyhow::Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("the garden kubeconfig {}", args.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.context("the garden kubeconfig")?;
    let client = kube::Client::try_from(config).context("building the garden client")?;
    let acceptor = webhook::tls_acceptor(&args.tls_cert_file, &args.tls_key_file)?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "garden admission webhook serving POST /validate");
    let garden = Arc::new(KubeGarden::new(client));
    webhook::serve(listener, acceptor, move |req| {
        let garden = garden.clone();
        async move { handle(&*garden, req).await }
    })
    .await;
    Ok(())
}
