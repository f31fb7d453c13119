//! The real gardener-resource-manager of the pinned gardener release (`scripts/k8s-tools
//! --gardener-contract` builds it) as a seed runs one per shoot: in the shoot's control-plane
//! namespace, its source the seed (the ManagedResources without a class there), its target the
//! shoot's API server. Here the source is one [`Cluster`] and the target another.
//!
//! Its configuration is the minimum (`ResourceManagerConfiguration`,
//! `resourcemanager.config.gardener.cloud/v1alpha1`): the ManagedResource and health controllers
//! (always on), the default class `resources` unless told otherwise, no leader election, no
//! webhooks (none is registered, so the webhook server serves nothing; it still starts and needs a
//! certificate, made here), none of the controllers that need kubelets, nodes, Istio or token
//! requests. Health, metrics and webhook ports are free ones on the loopback.
//!
//! What differs from a seed: both connections use the clusters' admin certificates (a seed's
//! resource manager has its own ServiceAccount in the seed and a token for its own in the shoot),
//! and it runs as a process of the test, not as a Deployment.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

use super::Cluster;
use super::process::Daemon;

/// `resources`: the class a ManagedResource without `spec.class` belongs to.
pub const DEFAULT_CLASS: &str = "resources";

/// A running gardener-resource-manager; stopped when dropped.
#[derive(Debug)]
pub struct ResourceManager {
    daemon: Daemon,
    /// Its health port (`/healthz`, `/readyz`).
    pub health_port: u16,
}

impl ResourceManager {
    /// Starts it with `source` (where the ManagedResources are: in `namespaces`, or all when empty)
    /// and `target` (where their objects go), for ManagedResources of `class`; waits until `/readyz`
    /// answers ok (its caches of both clusters synced).
    pub async fn start(source: &Cluster, target: &Cluster, namespaces: &[&str], class: &str) -> Result<Self, String> {
        let bin = super::tools::gardener_resource_manager()?;
        let dir = source.dir.join(format!("resource-manager-{}", super::free_port()?));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let source_kubeconfig = source.admin_kubeconfig_file()?;
        let target_kubeconfig = target.admin_kubeconfig_file()?;
        // The webhook server starts even with no webhook registered; it wants tls.crt and tls.key.
        super::garden::serving_cert(&dir, "tls", &["localhost"])?;
        let (health_port, metrics_port, webhook_port) = (super::free_port()?, super::free_port()?, super::free_port()?);
        let config = config(
            &source_kubeconfig,
            &target_kubeconfig,
            namespaces,
            class,
            &dir,
            [health_port, metrics_port, webhook_port],
        );
        let config_file = dir.join("config.yaml");
        std::fs::write(&config_file, config).map_err(|e| format!("{}: {e}", config_file.display()))?;
        // It reads KUBECONFIG and TARGET_KUBECONFIG before its configuration: set both to the files
        // it is given, so that no kubeconfig of the environment is ever used.
        let args = vec![
            format!("KUBECONFIG={}", source_kubeconfig.display()),
            format!("TARGET_KUBECONFIG={}", target_kubeconfig.display()),
            bin.display().to_string(),
            format!("--config={}", config_file.display()),
        ];
        let daemon = Daemon::start(Path::new("/usr/bin/env"), &args, None, &dir.join("gardener-resource-manager.log"))?;
        let mut rm = ResourceManager { daemon, health_port };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        while Instant::now() < deadline {
            match http_get(health_port, "/readyz") {
                Ok((200, _)) => return Ok(rm),
                Ok((status, body)) => last = format!("{status} {body}"),
                Err(e) => last = e,
            }
            if let Some(status) = rm.daemon.exited() {
                return Err(format!("gardener-resource-manager exited ({status}):\n{}", rm.daemon.log_tail(30)));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("gardener-resource-manager not ready within 60 s ({last}):\n{}", rm.daemon.log_tail(30)))
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.daemon.log_tail(lines)
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.daemon.log
    }
}

/// The configuration file: the minimum that runs the ManagedResource and health controllers.
fn config(source: &Path, target: &Path, namespaces: &[&str], class: &str, cert_dir: &Path, ports: [u16; 3]) -> String {
    let [health, metrics, webhooks] = ports;
    let namespaces = if namespaces.is_empty() {
        String::new()
    } else {
        format!("  namespaces: [{}]\n", namespaces.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "))
    };
    format!(
        "apiVersion: resourcemanager.config.gardener.cloud/v1alpha1
kind: ResourceManagerConfiguration
sourceClientConnection:
  kubeconfig: {source:?}
{namespaces}targetClientConnection:
  kubeconfig: {target:?}
leaderElection:
  leaderElect: false
server:
  webhooks:
    bindAddress: 127.0.0.1
    port: {webhooks}
    tls:
      serverCertDir: {cert_dir:?}
  healthProbes:
    bindAddress: 127.0.0.1
    port: {health}
  metrics:
    bindAddress: 127.0.0.1
    port: {metrics}
logLevel: info
logFormat: text
controllers:
  resourceClass: {class:?}
  # A seed's shoot resource manager resyncs every minute; the health checks run every 15 s here.
  managedResource:
    syncPeriod: 1m
  health:
    syncPeriod: 15s
webhooks: {{}}
",
        source = source.display().to_string(),
        target = target.display().to_string(),
        cert_dir = cert_dir.display().to_string(),
    )
}

/// A plain HTTP GET on the loopback: the status code and the body.
fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no HTTP status")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
    Ok((status, body))
}

/// The ManagedResources of `namespace`, as plain objects.
pub fn managed_resources(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("resources.gardener.cloud", "v1alpha1", "ManagedResource");
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk_with_plural(&gvk, "managedresources"))
}

/// The status of condition `kind` of a ManagedResource (`None` when it has none).
pub fn condition(mr: &Value, kind: &str) -> Option<String> {
    mr["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
        .map(String::from)
}

/// Waits until the ManagedResource `namespace/name` has condition `kind` with `status` for its
/// current generation (`status.observedGeneration`), as gardenlet waits on a shoot's
/// (`WaitUntilHealthy`); the object then.
pub async fn wait_condition(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    kind: &str,
    status: &str,
    timeout: Duration,
) -> Result<Value, String> {
    let api = managed_resources(client, namespace);
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < timeout {
        if let Some(mr) = api.get_opt(name).await.map_err(|e| format!("ManagedResource {namespace}/{name}: {e}"))? {
            let mr = serde_json::to_value(mr).map_err(|e| e.to_string())?;
            let current = mr["status"]["observedGeneration"] == mr["metadata"]["generation"];
            if current && condition(&mr, kind).as_deref() == Some(status) {
                return Ok(mr);
            }
            last = mr["status"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("ManagedResource {namespace}/{name}: no {kind}={status} within {timeout:?}; status {last}"))
}
