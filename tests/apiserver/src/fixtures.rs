//! Gardener objects for tests and benchmarks against the API test server.

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams};
use kubelink_ipam::gardener::{Seed, Shoot};
use serde_json::{Value, json};

/// The project namespace the fixtures put shoots in.
pub const PROJECT_NS: &str = "garden-dev";

/// A Seed with typical networks and `spec.wireguard {enabled: true, cidr}`.
pub fn seed(name: &str, wireguard_cidr: &str) -> Seed {
    seed_with(name, json!({"enabled": true, "cidr": wireguard_cidr}))
}

/// A Seed whose `spec.wireguard` is the given JSON.
pub fn seed_with(name: &str, wireguard: Value) -> Seed {
    serde_json::from_value(json!({
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Seed",
        "metadata": {"name": name},
        "spec": {
            "networks": {"nodes": "10.250.0.0/16", "pods": "100.96.0.0/11", "services": "100.64.0.0/13",
                         "blockCIDRs": ["169.254.169.254/32"]},
            "wireguard": wireguard,
        },
    }))
    .expect("fixture Seed")
}

/// A Shoot on `seed` in [`PROJECT_NS`] with networks outside the usual WireGuard range.
pub fn shoot(name: &str, seed: &str) -> Shoot {
    serde_json::from_value(json!({
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
        "metadata": {"name": name, "namespace": PROJECT_NS},
        "spec": {"seedName": seed, "networking": {"nodes": "10.180.0.0/16", "pods": "100.96.0.0/11", "services": "100.64.0.0/13"}},
    }))
    .expect("fixture Shoot")
}

/// `shoot-00000`, `shoot-00001`, ...: names that sort like their numbers.
pub fn shoot_name(i: usize) -> String {
    format!("shoot-{i:05}")
}

/// Creates shoots `range` on `seed`, 16 requests at a time.
pub async fn create_shoots(
    client: &kube::Client,
    seed: &str,
    range: std::ops::Range<usize>,
) -> Result<(), kube::Error> {
    let api = Api::<Shoot>::namespaced(client.clone(), PROJECT_NS);
    futures::stream::iter(range)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &shoot(&shoot_name(i), seed)).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect()
        .await
}

/// Creates the Seed.
pub async fn create_seed(client: &kube::Client, seed: &Seed) -> Result<Seed, kube::Error> {
    Api::<Seed>::all(client.clone()).create(&PostParams::default(), seed).await
}
