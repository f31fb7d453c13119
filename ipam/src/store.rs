//! The Kubernetes-backed store: the allocation table on the Seed (compare-and-swap), ShootState entries,
//! shoot Secrets, and the seed-local projection read back as allocations (`list_allocations`,
//! `watch_allocations`, from the ShootPeers; the tests use them, the agent has reflectors of its own).

use std::net::IpAddr;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::decode::{self, Raw, Skipped};
use crate::error::IpamError;
use crate::gardener::{Seed, ShootKey, ShootState};
use crate::keys::PublicKey;
use crate::projection::ShootPeer;
use crate::record::{ENTRY_NAME, Recorded};
use crate::table::{TABLE_ANNOTATION, Table};

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

/// The table in a Seed's annotation (of a [`Seed`] or a [`Raw`] one), with descriptions of entries that
/// were skipped.
pub fn table_of<K: kube::Resource>(seed: &K) -> (Table, Vec<String>) {
    let text = seed.meta().annotations.as_ref().and_then(|a| a.get(TABLE_ANNOTATION));
    text.map(|t| Table::parse(t)).unwrap_or_default()
}

/// Writes `next` into the Seed's table annotation, guarded by the resourceVersion of `seed` as it was
/// read. `Ok(None)` means `409 Conflict`: another writer changed the Seed since; read it again, decide
/// again, and retry (see [`backoff`]).
///
/// This is the serialization point: of two writers that read the same version, exactly one write succeeds.
///
/// The Seed is written back as it was read ([`Raw`]), with only the annotation changed.
pub async fn write_table(
    seeds: &Api<Raw<Seed>>,
    seed: Raw<Seed>,
    next: &Table,
) -> Result<Option<Raw<Seed>>, StoreError> {
    let name = seed.name().to_string();
    let mut value = seed.value;
    if !value["metadata"]["annotations"].is_object() {
        value["metadata"]["annotations"] = serde_json::json!({});
    }
    value["metadata"]["annotations"][TABLE_ANNOTATION] = next.to_text().into();
    match seeds.replace(&name, &PostParams::default(), &Raw::new(value)).await {
        Ok(written) => Ok(Some(written)),
        Err(e) if is_conflict(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets (`Some`) or removes (`None`) kubelink's entry in a shoot's ShootState, creating the ShootState
/// when it does not exist yet. Every other entry and field is kept.
///
/// A ShootState that does not decode is not written: [`StoreError::Skipped`] names it and the field.
pub async fn write_record(
    api: &Api<Raw<ShootState>>,
    key: &ShootKey,
    seed: &str,
    want: Option<&Recorded>,
) -> Result<bool, StoreError> {
    for attempt in 0..MAX_ATTEMPTS {
        let current = match api.get_opt(&key.name).await? {
            Some(raw) => Some(decode::typed(&raw).map_err(StoreError::Skipped)?),
            None => None,
        };
        let Some(next) = next_state(current.as_ref(), key, seed, want) else { return Ok(false) };
        let next = Raw::new(serde_json::to_value(&next).map_err(|e| StoreError::Kube(kube::Error::SerdeError(e)))?);
        let result = match current {
            Some(_) => api.replace(&key.name, &PostParams::default(), &next).await,
            None => api.create(&PostParams::default(), &next).await,
        };
        match result {
            Ok(_) => return Ok(true),
            Err(e) if is_conflict(&e) => backoff(attempt).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Contended { what: format!("ShootState {key}"), attempts: MAX_ATTEMPTS })
}

/// The ShootState to write, or `None` when it already says what we want. An entry another seed
/// wrote is not removed: after a control-plane migration the new seed's IPAM owns it, and the old
/// one releasing its address must not erase the new one's record.
fn next_state(current: Option<&ShootState>, key: &ShootKey, seed: &str, want: Option<&Recorded>) -> Option<ShootState> {
    match (current, want) {
        (None, None) => None,
        (Some(state), None) => {
            let writer = state.entry(ENTRY_NAME).and_then(|e| e.data.get("seed")).and_then(|s| s.as_str());
            if writer.is_some_and(|w| w != seed) {
                return None;
            }
            let mut next = state.clone();
            next.remove_entry(ENTRY_NAME).then_some(next)
        }
        (state, Some(rec)) => {
            let mut next = state.cloned().unwrap_or_else(|| ShootState::for_shoot(key));
            let entry = rec.to_entry(seed);
            if next.entry(ENTRY_NAME) == Some(&entry) {
                return None;
            }
            next.set_entry(entry);
            Some(next)
        }
    }
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

#[cfg(test)]
mod record_tests {
    use super::*;
    use crate::keys::PrivateKey;

    fn recorded() -> Recorded {
        Recorded { address: "192.168.128.3".parse().unwrap(), public_key: PrivateKey::generate().public_key() }
    }

    #[test]
    fn a_seed_removes_its_own_entry_but_not_one_another_seed_wrote() {
        let key = ShootKey { namespace: "garden-p".into(), name: "a".into() };
        let mut state = ShootState::for_shoot(&key);
        state.set_entry(recorded().to_entry("seed-b"));
        assert!(next_state(Some(&state), &key, "seed-a", None).is_none(), "seed-b's entry stays");
        let removed = next_state(Some(&state), &key, "seed-b", None).expect("seed-b removes its own");
        assert!(removed.entry(ENTRY_NAME).is_none());
    }

    #[test]
    fn an_entry_without_a_writer_is_removed_and_a_new_one_replaces_any() {
        let key = ShootKey { namespace: "garden-p".into(), name: "a".into() };
        let mut state = ShootState::for_shoot(&key);
        let mut entry = recorded().to_entry("seed-b");
        entry.data.as_object_mut().unwrap().remove("seed");
        state.set_entry(entry);
        assert!(next_state(Some(&state), &key, "seed-a", None).is_some(), "no writer recorded: removed");
        let rec = recorded();
        let next = next_state(Some(&state), &key, "seed-a", Some(&rec)).unwrap();
        assert_eq!(crate::record::read(&next).unwrap(), Some(rec));
        assert_eq!(next.entry(ENTRY_NAME).unwrap().data["seed"], "seed-a");
    }
}
