//! What the agent reads from and writes to the seed cluster: the seed-local projection the IPAM
//! controller writes (its Seed's SeedTunnel and the ShootPeers, through reflectors that wake the loop on
//! every change), its slot's Secret (the stable gateway key, only read), and the agent Pods (their
//! nodes and host IPs, which a slot Lease's node IP is checked against: [`super::next_hops`]). The
//! agent never talks to the garden, and never writes what shoots dial or trust: the endpoints and the
//! public keys are the extension controller's.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use kubelink_contract::decode::{self, Raw};
use kubelink_contract::keys::PrivateKey;
use kubelink_contract::projection::{Peer, SeedTunnel, ShootPeer as PeerObject};
use kubelink_contract::secret::text;
use kubelink_contract::{Slot, SlotError, gateway_secret, labels, names};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::ShootPeer;
use super::next_hops::AgentPod;

pub struct Cluster {
    client: Client,
    wake: Arc<Notify>,
    namespace: String,
    seed: String,
    /// Read as [`Raw`] JSON and decoded item by item: one object that does not decode stops nothing.
    tunnels: Store<Raw<SeedTunnel>>,
    /// Parsed as they arrive ([`PeerEntry`]): the name and the peer, not the JSON, on every node.
    peers: Store<PeerEntry>,
    /// The agent Pods (name, node, host IPs), when this agent runs as one of them.
    agent_pods: Option<Store<AgentPod>>,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.watches.iter().for_each(|w| w.abort());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "SeedTunnel {seed} not found in namespace {namespace} (yet); the extension controller writes it from the seed's Extension"
    )]
    NoTunnel { seed: String, namespace: String },
    #[error(transparent)]
    Invalid(#[from] kubelink_contract::InvalidValue),
    #[error("{0}")]
    Malformed(String),
    #[error("Secret {name}: {reason}")]
    Secret { name: String, reason: String },
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// Starts a reflector for `api` that wakes `wake` on every change.
pub(super) fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    wake: Arc<Notify>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    let task = tokio::spawn(async move {
        stream
            .for_each(|event| {
                match event {
                    Ok(_) => wake.notify_one(),
                    Err(e) => tracing::warn!("watch: {e}; retrying"),
                }
                async {}
            })
            .await;
    });
    (reader, task)
}

type Watches = (Store<Raw<SeedTunnel>>, Store<PeerEntry>, Vec<tokio::task::JoinHandle<()>>);

/// Whether a reflector has its first complete list.
fn ready<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt;
    store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
}

/// What the agent Pods are known as.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentPods {
    /// This agent is no Pod of the DaemonSet: the slot Leases' node IPs are taken as written.
    Unchecked,
    /// The first list is not complete yet.
    Listing,
    Listed(Vec<AgentPod>),
}

/// Reflectors for this seed's SeedTunnel (by name) and the ShootPeers, both in kubelink's namespace.
fn watch_projection(client: &Client, namespace: &str, seed: &str, wake: &Arc<Notify>) -> Watches {
    let by_name = watcher::Config::default().fields(&format!("metadata.name={seed}"));
    let (tunnels, tunnel_watch) = reflect(Api::namespaced(client.clone(), namespace), by_name, wake.clone());
    let (peers, peer_watch) =
        reflect(Api::namespaced(client.clone(), namespace), watcher::Config::default(), wake.clone());
    (tunnels, peers, vec![tunnel_watch, peer_watch])
}

/// A reflector for the agent DaemonSet's Pods in kubelink's namespace ([`labels::AGENT_PODS`]).
fn watch_agent_pods(
    client: &Client,
    namespace: &str,
    wake: &Arc<Notify>,
) -> (Store<AgentPod>, tokio::task::JoinHandle<()>) {
    let agents = watcher::Config::default().labels(labels::AGENT_PODS);
    reflect(Api::namespaced(client.clone(), namespace), agents, wake.clone())
}

impl Cluster {
    /// `client` is the seed cluster; `namespace` is kubelink's namespace there. With `pod` (this
    /// agent's Pod) the agent Pods are watched too: an agent that runs as a Pod of the DaemonSet
    /// checks the other holders' node IPs against theirs ([`Cluster::agent_pods`]).
    pub fn start(client: Client, namespace: &str, seed: &str, pod: Option<String>, wake: Arc<Notify>) -> Self {
        let (tunnels, peers, mut watches) = watch_projection(&client, namespace, seed, &wake);
        let agent_pods = pod.is_some().then(|| watch_agent_pods(&client, namespace, &wake)).map(|(store, task)| {
            watches.push(task);
            store
        });
        Cluster { client, wake, namespace: namespace.into(), seed: seed.into(), tunnels, peers, agent_pods, watches }
    }

    /// Starts the watches afresh (a new list, then watch). After a network partition the old watch
    /// connections stall until TCP's retransmission backoff gives them another try, which can take
    /// as long as the partition did; a new connection answers at once. Until the new list is
    /// complete, [`Cluster::synced`] is false and the agent changes nothing.
    pub fn rewatch(&mut self) {
        self.watches.iter().for_each(|w| w.abort());
        (self.tunnels, self.peers, self.watches) =
            watch_projection(&self.client, &self.namespace, &self.seed, &self.wake);
        if self.agent_pods.is_some() {
            let (store, task) = watch_agent_pods(&self.client, &self.namespace, &self.wake);
            self.agent_pods = Some(store);
            self.watches.push(task);
        }
    }

    /// Whether every reflector has its first complete list. Before that a missing ShootPeer would
    /// look like a deleted shoot, and a restarted gateway would drop that shoot's peer; a missing
    /// agent Pod would leave a gateway without a next hop.
    pub fn synced(&self) -> bool {
        ready(&self.tunnels) && ready(&self.peers) && self.agent_pods.as_ref().is_none_or(ready)
    }

    /// The agent Pods, as [`super::next_hops::verify_node_ips`] checks the slot Leases against them:
    /// `Unchecked` when this agent runs without a Pod name (not a Pod of the DaemonSet: there are no
    /// Pods to check against), `Listing` until the first list is complete.
    pub fn agent_pods(&self) -> AgentPods {
        match &self.agent_pods {
            None => AgentPods::Unchecked,
            Some(store) if !ready(store) => AgentPods::Listing,
            Some(store) => AgentPods::Listed(store.state().iter().map(|p| p.as_ref().clone()).collect()),
        }
    }

    fn tunnel(&self) -> Result<SeedTunnel, ClusterError> {
        let found = self.tunnels.state().into_iter().find(|t| t.metadata.name.as_deref() == Some(&self.seed));
        let raw = found
            .ok_or_else(|| ClusterError::NoTunnel { seed: self.seed.clone(), namespace: self.namespace.clone() })?;
        decode::typed(&raw).map_err(|s| ClusterError::Malformed(s.to_string()))
    }

    /// The seed's WireGuard CIDR.
    pub fn cidr(&self) -> Result<IpNet, ClusterError> {
        Ok(self.tunnel()?.cidr()?)
    }

    /// The number of gateway slots, once the SeedTunnel is known.
    pub fn slot_count(&self) -> Option<u8> {
        self.tunnel().ok().map(|t| t.spec.slots.clamp(1, 2))
    }

    /// Every shoot with a ShootPeer (see [`peers_of`]); what is skipped is logged.
    pub fn shoots(&self) -> BTreeSet<ShootPeer> {
        let entries = self.peers.state();
        let (shoots, problems) = peers_of(entries.iter().map(|e| e.as_ref()));
        for p in problems {
            tracing::warn!("{p}");
        }
        shoots
    }

    /// The slot's private key from Secret `kubelink-gateway-<slot>` (the extension controller creates
    /// it). Only read: the shoots get the public key and the endpoint from the controller.
    pub async fn slot_key(&self, slot: Slot) -> Result<PrivateKey, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = names::gateway(slot);
        let secret = api.get_opt(&name).await?.ok_or_else(|| ClusterError::Secret {
            name: name.clone(),
            reason: "not created yet; the extension controller creates it with the slot's key".into(),
        })?;
        slot_private_key(&name, &secret)
    }

    /// What the extension controller gives shoots to dial for `slot` (the SeedTunnel's
    /// `spec.endpoints`), once it has one.
    pub fn endpoint(&self, slot: Slot) -> Option<String> {
        let endpoints = self.tunnel().ok()?.spec.endpoints;
        endpoints.get(slot.index()).filter(|e| !e.is_empty()).cloned()
    }
}

/// A ShootPeer as the agent keeps it: parsed when it arrives, so that the watch cache holds the
/// name and the parsed peer (or why the object is skipped), not the object's JSON.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    metadata: ObjectMeta,
    peer: Result<Peer, String>,
}

impl PeerEntry {
    fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}

/// Never fails on an object's content: a ShootPeer that does not decode or parse becomes an entry
/// that says why, and is skipped (and logged) on every pass until it is fixed.
impl<'de> Deserialize<'de> for PeerEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Raw::<PeerObject>::deserialize(deserializer)?;
        let peer = match decode::typed(&raw) {
            Ok(object) => object.parse().map_err(|e| format!("{e}; skipped")),
            Err(skipped) => Err(skipped.to_string()),
        };
        // The watcher resumes from the last object's resourceVersion: without it, every event
        // would be followed by a new list.
        let m = raw.metadata;
        let metadata = ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            resource_version: m.resource_version,
            ..ObjectMeta::default()
        };
        Ok(PeerEntry { metadata, peer })
    }
}

impl Resource for PeerEntry {
    type DynamicType = ();
    type Scope = <PeerObject as Resource>::Scope;
    fn kind(_: &()) -> Cow<'_, str> {
        PeerObject::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        PeerObject::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        PeerObject::version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PeerObject::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The peers the ShootPeers give, in name order. A peer that does not parse, or that claims an address or
/// a public key an earlier peer already has, is described and skipped; the others are not held up.
/// WireGuard would resolve either contradiction silently: an allowed IP stays on one peer only, and
/// one key is one peer.
pub fn peers_of<'a>(entries: impl IntoIterator<Item = &'a PeerEntry>) -> (BTreeSet<ShootPeer>, Vec<String>) {
    let mut entries: Vec<&PeerEntry> = entries.into_iter().collect();
    entries.sort_by(|a, b| a.name().cmp(b.name()));
    let mut addresses = BTreeMap::new();
    let mut keys = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut problems = Vec::new();
    for entry in entries {
        let name = entry.name();
        let p = match &entry.peer {
            Ok(p) => p,
            Err(e) => {
                problems.push(e.clone());
                continue;
            }
        };
        if let Some(first) = addresses.get(&p.address) {
            problems.push(format!(
                "ShootPeer {name} spec.address: {} is already the address of ShootPeer {first}; skipped",
                p.address
            ));
        } else if let Some(first) = keys.get(&p.public_key) {
            problems.push(format!(
                "ShootPeer {name} spec.publicKey: already the key of ShootPeer {first} (one key is one peer); skipped"
            ));
        } else {
            addresses.insert(p.address, name);
            keys.insert(p.public_key, name);
            let (public_key, address, vpn_server) = (p.public_key, p.address, p.vpn_server);
            let (shoot, control_plane) = (p.shoot.to_string(), name.to_string());
            out.insert(ShootPeer { public_key, address, shoot, control_plane, vpn_server });
        }
    }
    (out, problems)
}

fn slot_private_key(name: &str, secret: &Secret) -> Result<PrivateKey, ClusterError> {
    const FIELD: &str = gateway_secret::PRIVATE_KEY;
    let text = text(secret, FIELD).ok_or_else(|| ClusterError::Secret {
        name: name.into(),
        reason: format!("data.{FIELD} is missing; delete the Secret to have a new key generated"),
    })?;
    text.parse().map_err(|e| ClusterError::Secret { name: name.into(), reason: format!("data.{FIELD}: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelink_contract::ShootKey;
    use kubelink_contract::keys::PublicKey;

    fn object(name: &str, address: &str, key: u8) -> PeerObject {
        let shoot = ShootKey::new("garden-dev", name);
        let (address, public_key) = (address.parse().unwrap(), PublicKey::from_bytes([key; 32]));
        PeerObject::of("kubelink", &format!("shoot--dev--{name}"), &shoot, address, &public_key)
    }

    #[test]
    fn an_entry_keeps_the_resource_version_the_watch_resumes_from() {
        let mut object = serde_json::json!(object("a", "192.168.128.10", 1));
        object["metadata"]["resourceVersion"] = "42".into();
        object["metadata"]["annotations"] = serde_json::json!({"big": "x".repeat(1000)});
        let entry: PeerEntry = serde_json::from_value(object).unwrap();
        assert_eq!(entry.meta().resource_version.as_deref(), Some("42"));
        assert!(entry.meta().annotations.is_none(), "only what the agent reads is kept");
        assert_eq!(entry.peer.map(|p| p.address.to_string()), Ok("192.168.128.10".to_string()));
    }

    #[test]
    fn contradicting_and_garbage_peers_are_skipped_by_name_and_the_rest_kept() {
        let mut garbage = object("d", "192.168.128.13", 4);
        garbage.spec.address = "x".repeat(10_000);
        let objects = [
            object("a", "192.168.128.10", 1),
            object("b", "192.168.128.10", 2),
            object("c", "192.168.128.12", 1),
            garbage,
            object("e", "192.168.128.14", 5),
        ];
        let entries: Vec<PeerEntry> =
            objects.iter().map(|o| serde_json::from_value(serde_json::json!(o)).unwrap()).collect();
        let (peers, problems) = peers_of(&entries);
        let addresses: Vec<String> = peers.iter().map(|p| p.address.to_string()).collect();
        assert_eq!(addresses, ["192.168.128.10", "192.168.128.14"]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("ShootPeer shoot--dev--b spec.address") && problems[0].contains("shoot--dev--a"));
        assert!(problems[1].contains("ShootPeer shoot--dev--c spec.publicKey"), "{}", problems[1]);
        assert!(problems[2].contains("ShootPeer shoot--dev--d spec.address") && problems[2].len() < 300);
    }
}
