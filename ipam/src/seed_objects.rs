//! The extension controller's writes into the seed cluster: the projection the agents read (one
//! SeedTunnel, one ShootPeer per shoot), the gateway slot Secrets, and each shoot's ManagedResource.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};

use crate::contract::{labels, names, new_gateway_secret_data};
use crate::keys::PrivateKey;
use crate::managed::{self, ManagedResource};
use crate::projection::{SeedTunnel, ShootPeer, plan_peers};
use crate::store::{StoreError, is_conflict, is_not_found, write_secret};

/// Brings the namespace's ShootPeers to `want`; returns the number of writes.
pub async fn write_peers(
    api: &Api<ShootPeer>,
    current: &BTreeMap<String, ShootPeer>,
    want: &BTreeMap<String, ShootPeer>,
) -> Result<usize, StoreError> {
    let changes = plan_peers(current, want);
    let writes = changes.create.len() + changes.replace.len() + changes.delete.len();
    // Another replica writing the same peer (409) is no error: the next pass compares again.
    for peer in &changes.create {
        tolerate_conflict(api.create(&PostParams::default(), peer).await)?;
    }
    for peer in &changes.replace {
        let name = peer.metadata.name.as_deref().unwrap_or_default();
        tolerate_conflict(api.replace(name, &PostParams::default(), peer).await)?;
    }
    for name in &changes.delete {
        delete(api, name).await?;
    }
    Ok(writes)
}

/// Creates or updates the SeedTunnel; returns whether it wrote.
pub async fn write_tunnel(
    api: &Api<SeedTunnel>,
    current: Option<&SeedTunnel>,
    want: SeedTunnel,
) -> Result<bool, StoreError> {
    match current {
        Some(have) if have.spec == want.spec => Ok(false),
        Some(have) => {
            let mut next = want;
            next.metadata.resource_version = have.metadata.resource_version.clone();
            let name = next.metadata.name.clone().unwrap_or_default();
            tolerate_conflict(api.replace(&name, &PostParams::default(), &next).await)?;
            Ok(true)
        }
        None => {
            tolerate_conflict(api.create(&PostParams::default(), &want).await)?;
            Ok(true)
        }
    }
}

/// The slot's Secret `name`, created with a fresh key pair when absent (a lost create race re-reads
/// the winner's). The agent that holds the slot reads the key and publishes its endpoint in it.
pub async fn ensure_slot_secret(api: &Api<Secret>, name: &str) -> Result<Secret, StoreError> {
    if let Some(secret) = api.get_opt(name).await? {
        return Ok(secret);
    }
    match api.create(&PostParams::default(), &new_slot_secret(name)).await {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get(name).await?),
        Err(e) => Err(e.into()),
    }
}

fn new_slot_secret(name: &str) -> Secret {
    let data = new_gateway_secret_data(&PrivateKey::generate());
    let mut secret = Secret { data: Some(data), type_: Some("Opaque".into()), ..Secret::default() };
    secret.metadata.name = Some(name.into());
    secret.metadata.labels = Some(labels::managed());
    secret
}

/// The ManagedResource and its Secret for a shoot whose sidecar Secret has `data`, written when the
/// listed ones differ. Returns the number of writes.
pub async fn write_managed(
    secrets: &Api<Secret>,
    resources: &Api<ManagedResource>,
    namespace: &str,
    listed: (Option<&Secret>, Option<&ManagedResource>),
    data: &BTreeMap<String, ByteString>,
) -> Result<usize, StoreError> {
    let objects = managed::objects_data(data);
    let mut writes = 0;
    if listed.0.and_then(|s| s.data.as_ref()) != Some(&objects) {
        let build = |_: Option<&Secret>| {
            let mut s = Secret { data: Some(objects.clone()), type_: Some("Opaque".into()), ..Secret::default() };
            s.metadata.name = Some(names::MANAGED_RESOURCE_SECRET.into());
            s.metadata.namespace = Some(namespace.into());
            s.metadata.labels = Some(labels::managed());
            s
        };
        write_secret(secrets, names::MANAGED_RESOURCE_SECRET, build).await?;
        writes += 1;
    }
    let want = managed::managed_resource(namespace);
    match listed.1 {
        Some(have) if have.spec == want.spec => {}
        Some(have) => {
            let mut next = want;
            next.metadata.resource_version = have.metadata.resource_version.clone();
            tolerate_conflict(resources.replace(names::MANAGED_RESOURCE, &PostParams::default(), &next).await)?;
            writes += 1;
        }
        None => {
            tolerate_conflict(resources.create(&PostParams::default(), &want).await)?;
            writes += 1;
        }
    }
    Ok(writes)
}

/// Removes a released shoot's ManagedResource (gardener-resource-manager then deletes the Secret in
/// the shoot) and its Secret. Returns the number of deletions.
pub async fn delete_managed(secrets: &Api<Secret>, resources: &Api<ManagedResource>) -> Result<usize, StoreError> {
    Ok(usize::from(delete(resources, names::MANAGED_RESOURCE).await?)
        + usize::from(delete(secrets, names::MANAGED_RESOURCE_SECRET).await?))
}

/// Deletes an object; absence is success. Returns whether something was deleted.
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<bool, StoreError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A write another writer got to first (409: AlreadyExists or Conflict) is left to the next pass.
fn tolerate_conflict<T>(result: Result<T, kube::Error>) -> Result<(), StoreError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
