//! The pods of this node, in every namespace, as [`crate::pod_scope`] needs them: namespace and
//! addresses. Watched with a `spec.nodeName` field selector, so a node sees only its own pods (as its
//! kubelet does), and kept parsed and small ([`PodEntry`]): no spec, no status beyond the addresses.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ipnet::IpNet;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::agent::ShootPeer;
use crate::link::Link;
use crate::pod_scope::{LocalPod, ScopeTable, plan};

/// This node's part of the pod scope ([`crate::pod_scope`]): its pods, its table, its own address.
pub struct Scope {
    pub pods: LocalPods,
    table: ScopeTable,
    node_ip: IpAddr,
    /// Whether the node IP was found on no link (said once, not every pass).
    unlinked: AtomicBool,
}

impl Scope {
    pub fn start(client: Client, node: &str, node_ip: IpAddr, wake: Arc<Notify>) -> Self {
        let pods = LocalPods::start(client, node, wake);
        Scope { pods, table: ScopeTable::default(), node_ip, unlinked: AtomicBool::new(false) }
    }

    /// Brings the table up to date with this node's pods and the seed's shoots. Errors are logged and
    /// the table stays as it was: the next pass tries again.
    pub async fn apply(&self, link: &Link, cidr: IpNet, device: &str, shoots: &BTreeSet<ShootPeer>) {
        let Some(pods) = self.pods.pods() else { return };
        let own = match link.links_with_address(self.node_ip).await {
            Ok(own) => own,
            Err(e) => return tracing::warn!("pod scope: finding the node's own link: {e}"),
        };
        // Without the node's own link, what other nodes send a gateway would count as a pod's: only
        // the addresses the API server lists are checked then.
        let own = if own.is_empty() {
            if !self.unlinked.swap(true, Ordering::Relaxed) {
                tracing::warn!(node_ip = %self.node_ip, "pod scope: no link has the node IP; only the addresses of this node's listed pods are checked");
            }
            own
        } else {
            own.into_iter().chain([device.to_string()]).collect()
        };
        let spec = plan(cidr, own, &pods, shoots);
        match self.table.ensure(&spec).await {
            Ok(true) => tracing::info!(pods = spec.pods.len(), pairs = spec.allowed.len(), "pod scope written"),
            Ok(false) => {}
            Err(e) => tracing::warn!("pod scope: {e}"),
        }
    }

    /// New flows from this node's pods to shoots not their own, dropped (`None`: no table yet).
    pub fn drops(&self) -> Option<u64> {
        self.table.drops()
    }
}

pub struct LocalPods {
    client: Client,
    node: String,
    wake: Arc<Notify>,
    store: Store<PodEntry>,
    watch: tokio::task::JoinHandle<()>,
}

impl Drop for LocalPods {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl LocalPods {
    pub fn start(client: Client, node: &str, wake: Arc<Notify>) -> Self {
        let (store, watch) = Self::watch(&client, node, &wake);
        LocalPods { client, node: node.into(), wake, store, watch }
    }

    fn watch(client: &Client, node: &str, wake: &Arc<Notify>) -> (Store<PodEntry>, tokio::task::JoinHandle<()>) {
        let on_node = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        super::cluster::reflect(Api::all(client.clone()), on_node, wake.clone())
    }

    /// A new list, then watch (see [`super::cluster::Cluster::rewatch`]).
    pub fn rewatch(&mut self) {
        self.watch.abort();
        (self.store, self.watch) = Self::watch(&self.client, &self.node, &self.wake);
    }

    /// The pods, once the first list is complete (before that, the scope stays as it was).
    pub fn pods(&self) -> Option<Vec<LocalPod>> {
        use futures::FutureExt;
        self.store.wait_until_ready().now_or_never()?.ok()?;
        Some(self.store.state().iter().filter_map(|e| e.pod.clone()).collect())
    }
}

/// A Pod as the scope keeps it: `None` for a host-network Pod (its address is the node's) and for one
/// that has ended (its address may already be another Pod's).
#[derive(Debug, Clone)]
pub struct PodEntry {
    metadata: ObjectMeta,
    pod: Option<LocalPod>,
}

#[derive(Deserialize)]
struct Wire {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: WireSpec,
    #[serde(default)]
    status: WireStatus,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    #[serde(default)]
    host_network: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    phase: Option<String>,
    #[serde(default, rename = "podIPs")]
    pod_ips: Option<Vec<WireIp>>,
}

#[derive(Deserialize)]
struct WireIp {
    ip: String,
}

impl Wire {
    fn local_pod(self) -> Option<LocalPod> {
        let ended = matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed"));
        if self.spec.host_network == Some(true) || ended {
            return None;
        }
        let ips = self.status.pod_ips.unwrap_or_default().iter().filter_map(|i| i.ip.parse().ok()).collect();
        Some(LocalPod { namespace: self.metadata.namespace.unwrap_or_default(), ips })
    }
}

/// Never fails on a Pod's content beyond its metadata: what does not parse is no address.
impl<'de> Deserialize<'de> for PodEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let m = &wire.metadata;
        let metadata = ObjectMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            resource_version: m.resource_version.clone(),
            ..ObjectMeta::default()
        };
        Ok(PodEntry { metadata, pod: wire.local_pod() })
    }
}

impl Resource for PodEntry {
    type DynamicType = ();
    type Scope = <Pod as Resource>::Scope;
    fn kind(_: &()) -> Cow<'_, str> {
        Pod::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        Pod::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        Pod::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Pod::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(entry: &PodEntry) -> Option<&[IpAddr]> {
        entry.pod.as_ref().map(|p| p.ips.as_slice())
    }

    fn entry(json: serde_json::Value) -> PodEntry {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_running_pod_keeps_its_namespace_and_addresses_and_nothing_else() {
        let e = entry(serde_json::json!({
            "metadata": {"name": "kube-apiserver-0", "namespace": "shoot--a", "resourceVersion": "7",
                         "annotations": {"big": "x".repeat(1000)}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "100.64.2.1"}, {"ip": "fd00::1"}, {"ip": "garbage"}]}
        }));
        assert_eq!(e.meta().resource_version.as_deref(), Some("7"));
        assert!(e.meta().annotations.is_none());
        let pod = e.pod.unwrap();
        assert_eq!(pod.namespace, "shoot--a");
        assert_eq!(pod.ips, ["100.64.2.1".parse::<IpAddr>().unwrap(), "fd00::1".parse().unwrap()]);
    }

    #[test]
    fn host_network_ended_and_addressless_pods_give_no_address() {
        let host = entry(serde_json::json!({"metadata": {"namespace": "kubelink"}, "spec": {"hostNetwork": true},
                                            "status": {"phase": "Running", "podIPs": [{"ip": "10.250.0.1"}]}}));
        let ended = entry(serde_json::json!({"metadata": {"namespace": "a"}, "status": {"phase": "Succeeded",
                                             "podIPs": [{"ip": "100.64.2.9"}]}}));
        let pending = entry(serde_json::json!({"metadata": {"namespace": "a"}, "status": {"phase": "Pending"}}));
        assert!(addresses(&host).is_none() && addresses(&ended).is_none());
        assert_eq!(addresses(&pending), Some(&[][..]));
    }
}
