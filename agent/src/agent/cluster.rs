//! What the agent reads from and writes to Kubernetes: the Seed (WireGuard CIDR) and the ShootStates
//! (allocations) through reflectors that wake the loop on every change, the slot's Secret (its stable
//! key), and the label on the agent's own Pod that the slot's LoadBalancer Service selects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use kubelink_ipam::gardener::{Seed, ShootState};
use kubelink_ipam::keys::PrivateKey;
use kubelink_ipam::secret::{gateway_secret_name, text};
use kubelink_ipam::store::{join, table_of};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::ShootPeer;

/// Label on the gateway's Pod: the slot it holds. The slot's LoadBalancer Service selects on it.
pub const SLOT_LABEL: &str = "kubelink.gardener.cloud/gateway-slot";

pub struct Cluster {
    client: Client,
    garden: Client,
    wake: Arc<Notify>,
    namespace: String,
    seed: String,
    pod: Option<String>,
    seeds: Store<Seed>,
    states: Store<ShootState>,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.watches.iter().for_each(|w| w.abort());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Seed {0} not found (yet)")]
    NoSeed(String),
    #[error("Seed {seed}: {field} is not set; set spec.wireguard.enabled: true and spec.wireguard.cidr")]
    NoWireguard { seed: String, field: &'static str },
    #[error("Seed {seed}: {field}.cidr {value:?} is not a CIDR")]
    BadCidr { seed: String, field: &'static str, value: String },
    #[error("Secret {name}: {reason}")]
    Secret { name: String, reason: String },
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// Starts a reflector for `api` that wakes `wake` on every change.
fn reflect<K>(api: Api<K>, wake: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
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

/// Reflectors for the Seeds and the ShootStates.
fn watch_garden(
    garden: &Client,
    wake: &Arc<Notify>,
) -> (Store<Seed>, Store<ShootState>, Vec<tokio::task::JoinHandle<()>>) {
    let (seeds, seed_watch) = reflect(Api::<Seed>::all(garden.clone()), wake.clone());
    let (states, state_watch) = reflect(Api::<ShootState>::all(garden.clone()), wake.clone());
    (seeds, states, vec![seed_watch, state_watch])
}

impl Cluster {
    /// `client` serves Leases, Secrets and Pods (the seed); `garden` serves Seeds and ShootStates.
    pub fn start(
        client: Client,
        garden: Client,
        namespace: &str,
        seed: &str,
        pod: Option<String>,
        wake: Arc<Notify>,
    ) -> Self {
        let (seeds, states, watches) = watch_garden(&garden, &wake);
        Cluster { client, garden, wake, namespace: namespace.into(), seed: seed.into(), pod, seeds, states, watches }
    }

    /// Starts the watches afresh (a new list, then watch). After a network partition the old watch
    /// connections stall until TCP's retransmission backoff gives them another try, which can take
    /// as long as the partition did; a new connection answers at once. Until the new list is
    /// complete, [`Cluster::synced`] is false and the agent changes nothing.
    pub fn rewatch(&mut self) {
        self.watches.iter().for_each(|w| w.abort());
        (self.seeds, self.states, self.watches) = watch_garden(&self.garden, &self.wake);
    }

    /// Whether both reflectors have their first complete list. Before that a missing ShootState
    /// would look like a deleted shoot, and a restarted gateway would drop that shoot's peer.
    pub fn synced(&self) -> bool {
        use futures::FutureExt;
        let ready = |w: Option<Result<(), _>>| w.is_some_and(|r| r.is_ok());
        ready(self.seeds.wait_until_ready().now_or_never()) && ready(self.states.wait_until_ready().now_or_never())
    }

    /// The Seed's WireGuard CIDR.
    pub fn cidr(&self) -> Result<IpNet, ClusterError> {
        let seed = self.seed_object().ok_or_else(|| ClusterError::NoSeed(self.seed.clone()))?;
        let Some((field, wg)) = seed.wireguard().filter(|(_, wg)| wg.enabled) else {
            return Err(ClusterError::NoWireguard { seed: self.seed.clone(), field: "spec.wireguard" });
        };
        let text = wg.cidr.clone().unwrap_or_default();
        text.parse().map_err(|_| ClusterError::BadCidr { seed: self.seed.clone(), field, value: text })
    }

    /// Every shoot of this seed with an allocation: the Seed's allocation table is the authority (one
    /// address per shoot, unique); a ShootState only contributes the public key recorded for that very
    /// address. Problems (garbage entries) are logged and skipped.
    pub fn shoots(&self) -> BTreeSet<ShootPeer> {
        let Some(seed) = self.seed_object() else { return BTreeSet::new() };
        let (table, problems) = table_of(&seed);
        let states: Vec<ShootState> = self.states.state().iter().map(|s| (**s).clone()).collect();
        let joined = join(&table, &states);
        for p in problems.iter().chain(&joined.problems) {
            tracing::debug!("allocations: {p}");
        }
        joined
            .entries
            .into_iter()
            .filter_map(|a| Some(ShootPeer { public_key: a.public_key?, address: a.address }))
            .collect()
    }

    fn seed_object(&self) -> Option<Arc<Seed>> {
        self.seeds.state().into_iter().find(|s| s.metadata.name.as_deref() == Some(&self.seed))
    }

    /// The slot's private key from Secret `kubelink-gateway-<slot>`, created with a fresh key when
    /// absent (a lost create race re-reads the winner's). Keeps `endpoint` up to date.
    pub async fn slot_key(&self, slot: u8, endpoint: &str) -> Result<PrivateKey, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = gateway_secret_name(slot);
        let secret = match api.get_opt(&name).await? {
            Some(s) => s,
            None => match api.create(&PostParams::default(), &new_slot_secret(&name, endpoint)).await {
                Ok(s) => s,
                Err(kube::Error::Api(e)) if e.is_already_exists() => api.get(&name).await?,
                Err(e) => return Err(e.into()),
            },
        };
        let key = slot_private_key(&name, &secret)?;
        if text(&secret, "endpoint").as_deref() != Some(endpoint) || text(&secret, "publicKey").is_none() {
            let data = serde_json::json!({"data": {
                "endpoint": ByteString(endpoint.as_bytes().to_vec()),
                "publicKey": ByteString(key.public_key().to_base64().into_bytes()),
            }});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&data)).await?;
        }
        Ok(key)
    }

    /// Sets (or with `None` removes) the slot label on our own Pod. Taking a slot also strips its label
    /// from every other Pod: a gateway that died without cleaning up must not stay behind the slot's
    /// load balancer.
    pub async fn label_pod(&self, slot: Option<u8>) -> Result<(), ClusterError> {
        let Some(pod) = &self.pod else { return Ok(()) };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        if let Some(slot) = slot {
            let selector = format!("{SLOT_LABEL}={slot}");
            let holders = api.list(&kube::api::ListParams::default().labels(&selector)).await?;
            for other in holders.items.iter().filter_map(|p| p.metadata.name.as_ref()).filter(|n| *n != pod) {
                tracing::info!(pod = %other, slot, "removing a stale gateway label");
                Self::set_label(&api, other, None).await?;
            }
        }
        Self::set_label(&api, pod, slot).await
    }

    async fn set_label(api: &Api<Pod>, pod: &str, slot: Option<u8>) -> Result<(), ClusterError> {
        let value = slot.map(|s| serde_json::Value::String(s.to_string())).unwrap_or(serde_json::Value::Null);
        let patch = serde_json::json!({"metadata": {"labels": {SLOT_LABEL: value}}});
        api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }
}

fn new_slot_secret(name: &str, endpoint: &str) -> Secret {
    let key = PrivateKey::generate();
    let data: BTreeMap<String, ByteString> = [
        ("privateKey", key.expose_base64().to_string()),
        ("publicKey", key.public_key().to_base64()),
        ("endpoint", endpoint.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
    .collect();
    Secret {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        data: Some(data),
        ..Secret::default()
    }
}

fn slot_private_key(name: &str, secret: &Secret) -> Result<PrivateKey, ClusterError> {
    let text = text(secret, "privateKey").ok_or_else(|| ClusterError::Secret {
        name: name.into(),
        reason: "data.privateKey is missing; delete the Secret to have a new key generated".into(),
    })?;
    text.parse().map_err(|e| ClusterError::Secret { name: name.into(), reason: format!("data.privateKey: {e}") })
}
