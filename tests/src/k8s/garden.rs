//! A real garden on the test cluster: gardener-apiserver of the pinned gardener release
//! (`scripts/k8s-tools --gardener-contract` builds it) served through the cluster's aggregation
//! layer, as gardener-operator runs it in the virtual garden: its objects in the cluster's etcd
//! under its own prefix, delegated authentication and authorization against kube-apiserver, its
//! default admission plugins (and so the ValidatingAdmissionWebhook plugin reading the webhooks
//! registered in kube-apiserver), one APIService per group version.
//!
//! What differs from a landscape: the APIServices point at a Service of type ExternalName
//! (`localhost`), because no kube-proxy or kube-controller-manager runs here; the TLS names and CA
//! are the test's own; no gardener-controller-manager, scheduler or admission controller runs (a
//! Shoot is scheduled by setting `spec.seedName` when it is created).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::{Value, json};

use super::Cluster;
use super::process::Daemon;

/// The group versions gardener-apiserver serves that the tests use.
const GROUP_VERSIONS: [(&str, &str); 4] = [
    ("core.gardener.cloud", "v1beta1"),
    ("core.gardener.cloud", "v1"),
    ("seedmanagement.gardener.cloud", "v1alpha1"),
    ("security.gardener.cloud", "v1alpha1"),
];

/// A CA of the test's own and a serving certificate it signed, as PEM files.
#[derive(Debug, Clone)]
pub struct Serving {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a CA and a serving certificate for `names` (DNS names; `127.0.0.1` is always in it) into
/// `dir/<file>.crt` and `.key`.
pub fn serving_cert(dir: &Path, file: &str, names: &[&str]) -> Result<Serving, String> {
    let e = |what: &'static str| move |e: rcgen::Error| format!("making {what}: {e}");
    let ca_key = KeyPair::generate().map_err(e("a CA key"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e("a CA"))?;
    ca.distinguished_name.push(DnType::CommonName, format!("kubelink-test-{file}-ca"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(e("a CA"))?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).map_err(e("a certificate"))?;
    params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or(file));
    params.subject_alt_names.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(e("a key"))?;
    let cert = params.signed_by(&key, &ca).map_err(e("a certificate"))?;
    let write = |name: String, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map(|_| path.clone()).map_err(|err| format!("{}: {err}", path.display()))
    };
    Ok(Serving {
        ca_pem: ca.pem(),
        cert: write(format!("{file}.crt"), cert.pem())?,
        key: write(format!("{file}.key"), key.serialize_pem())?,
    })
}

/// gardener-apiserver, aggregated into `cluster`'s kube-apiserver.
#[derive(Debug)]
pub struct GardenApi {
    daemon: Daemon,
}

impl GardenApi {
    /// Starts gardener-apiserver on a free port, registers its APIServices and waits until kube-apiserver
    /// serves Seeds through it.
    pub async fn start(cluster: &Cluster) -> Result<Self, String> {
        let bin = super::tools::gardener_apiserver()?;
        let port = super::free_port()?;
        let serving =
            serving_cert(&cluster.dir, "gardener-apiserver", &["gardener-apiserver.garden.svc", "localhost"])?;
        let kubeconfig = cluster.admin_kubeconfig_file()?;
        let k = kubeconfig.display();
        let args = vec![
            format!("--etcd-servers={}", cluster.etcd_url()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", serving.cert.display()),
            format!("--tls-private-key-file={}", serving.key.display()),
            format!("--kubeconfig={k}"),
            format!("--authentication-kubeconfig={k}"),
            format!("--authorization-kubeconfig={k}"),
            "--authorization-always-allow-paths=/healthz".into(),
            "--cluster-identity=kubelink-test-garden".into(),
            "--log-level=info".into(),
        ];
        let daemon = Daemon::start(bin, &args, None, &cluster.dir.join("gardener-apiserver.log"))?;
        let mut garden = GardenApi { daemon };
        let client = cluster.client().await?;
        cluster.ensure_namespace("garden").await?;
        let ca = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(&serving.ca_pem)
        };
        let mut objects = vec![json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "gardener-apiserver", "namespace": "garden"},
            "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"port": port}]},
        })];
        for (group, version) in GROUP_VERSIONS {
            objects.push(json!({
                "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": format!("{version}.{group}")},
                "spec": {"group": group, "version": version, "groupPriorityMinimum": 10000,
                         "versionPriority": if version == "v1beta1" { 20 } else { 15 }, "caBundle": ca,
                         "service": {"name": "gardener-apiserver", "namespace": "garden", "port": port}},
            }));
        }
        for object in objects {
            apply(&client, &object).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            let request = http::Request::get("/apis/core.gardener.cloud/v1beta1/seeds").body(Vec::new());
            match client.request_text(request.map_err(|e| e.to_string())?).await {
                Ok(_) => return Ok(garden),
                Err(e) => last = e.to_string(),
            }
            if let Some(status) = garden.daemon.exited() {
                return Err(format!("gardener-apiserver exited ({status}):\n{}", garden.daemon.log_tail(30)));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("gardener-apiserver not served within 60 s ({last}):\n{}", garden.daemon.log_tail(30)))
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.daemon.log_tail(lines)
    }
}

/// Server-side apply of one object (any kind the cluster serves), as the admin.
pub async fn apply(client: &kube::Client, object: &Value) -> Result<Value, String> {
    let api_version = object["apiVersion"].as_str().ok_or("an object without apiVersion")?;
    let kind = object["kind"].as_str().ok_or("an object without kind")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.map_err(|e| format!("{kind}: {e}"))?;
    let name = object["metadata"]["name"].as_str().ok_or("an object without a name")?;
    let api: kube::Api<kube::api::DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
            kube::Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => kube::Api::all_with(client.clone(), &resource),
    };
    let params = kube::api::PatchParams::apply("kubelink-tests").force();
    let applied = api
        .patch(name, &params, &kube::api::Patch::Apply(object))
        .await
        .map_err(|e| format!("applying {kind} {name}: {e}"))?;
    serde_json::to_value(applied).map_err(|e| e.to_string())
}
