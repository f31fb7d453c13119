//! Writing to the seed: compare-and-swap retries, shoot Secrets, and the seed-local projection read back
//! as allocations (`list_allocations`, `watch_allocations`, from the ShootPeers; `kubelink ipam list`
//! and the tests use them, the agent has reflectors of its own).

use std::net::IpAddr;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::contract::ShootKey;
use crate::decode::{self, Raw, Skipped};
use crate::error::IpamError;
use crate::keys::PublicKey;
use crate::projection::ShootPeer;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{what}: still conflicting after {attempts} attempts; another writer keeps changing it")]
    Contended { what: String, attempts: u32 },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// One object does not decode: the pass goes on without it.
    #[error("{0}")]
    Skipped(Box<Skipped>),
}

/// How often a compare-and-swap is retried after `409 Conflict` before giving up for this pass.
pub const MAX_ATTEMPTS: u32 = 64;

pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Short, growing, jittered pause between conflicting attempts, so racing writers spread out.
pub async fn backoff(attempt: u32) {
    let jitter = u64::from(std::process::id() ^ attempt.wrapping_mul(2_654_435_761)) % 7;
    let ms = (u64::from(attempt.min(6)) * 3 + jitter).min(50);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Creates or updates a Secret to what `build` makes of the current one (`None`: absent). `build` runs on
/// every attempt, so after a lost race (`409`) it sees the winner's Secret and can keep its key.
pub async fn write_secret(
    api: &Api<Secret>,
    name: &str,
    build: impl Fn(Option<&Secret>) -> Secret,
) -> Result<Secret, StoreError> {
    for attempt in 0..MAX_ATTEMPTS {
        let current = api.get_opt(name).await?;
        let desired = build(current.as_ref());
        let result = match current {
            None => api.create(&PostParams::default(), &desired).await,
            Some(current) if current.data == desired.data && labels_present(&current, &desired) => return Ok(current),
            Some(current) => {
                let mut next = current.clone();
                next.data = desired.data.clone();
                next.string_data = None;
                let labels = next.metadata.labels.get_or_insert_with(Default::default);
                labels.extend(desired.metadata.labels.clone().unwrap_or_default());
                api.replace(name, &PostParams::default(), &next).await
            }
        };
        match result {
            Ok(s) => return Ok(s),
            Err(e) if is_conflict(&e) => backoff(attempt).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Contended { what: format!("Secret {name}"), attempts: MAX_ATTEMPTS })
}

fn labels_present(current: &Secret, desired: &Secret) -> bool {
    let have = current.metadata.labels.clone().unwrap_or_default();
    desired.metadata.labels.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
}

/// Deletes a Secret; absence is success.
pub async fn delete_secret(api: &Api<Secret>, name: &str) -> Result<bool, StoreError> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// One shoot's allocation as the seed's projection shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub shoot: ShootKey,
    pub address: IpAddr,
    pub public_key: PublicKey,
}

/// Every allocation on a seed, by shoot, and the ShootPeers that were skipped (each described).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocations {
    pub entries: Vec<Allocation>,
    pub problems: Vec<String>,
}

/// The allocations the ShootPeers show, sorted by shoot. A peer that does not parse is described and
/// skipped; the others are not held up.
pub fn allocations_of<'a>(peers: impl IntoIterator<Item = &'a ShootPeer>) -> Allocations {
    let mut out = Allocations::default();
    for peer in peers {
        match peer.parse() {
            Ok(p) => out.entries.push(Allocation { shoot: p.shoot, address: p.address, public_key: p.public_key }),
            Err(e) => out.problems.push(format!("{e}; skipped")),
        }
    }
    out.entries.sort_by(|a, b| a.shoot.cmp(&b.shoot));
    out
}

/// Reads the allocations from the ShootPeers in kubelink's `namespace` on the seed. Each ShootPeer is
/// decoded on its own: one that does not is described among the problems, and the rest are listed.
pub async fn list_allocations(seed: &kube::Client, namespace: &str) -> Result<Allocations, StoreError> {
    let peers = Api::<Raw<ShootPeer>>::namespaced(seed.clone(), namespace).list(&ListParams::default()).await?;
    let (peers, skipped) = decode::split(peers.items);
    let mut out = allocations_of(&peers);
    out.problems.extend(skipped.iter().map(ToString::to_string));
    Ok(out)
}

/// The allocations, again after every change to the ShootPeers in `namespace`. Errors are yielded,
/// and the stream continues.
pub fn watch_allocations(seed: kube::Client, namespace: String) -> impl Stream<Item = Result<Allocations, StoreError>> {
    let peers = Api::<Raw<ShootPeer>>::namespaced(seed.clone(), &namespace);
    let changes = watcher(peers, watcher::Config::default()).default_backoff().ready_chunks(1024);
    changes.then(move |_| {
        let (seed, namespace) = (seed.clone(), namespace.clone());
        async move { list_allocations(&seed, &namespace).await }
    })
}
