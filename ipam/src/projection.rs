//! The seed-local projection: what the seed's node agents need, written by the extension controller into
//! the seed cluster as small, non-secret objects, so that no node ever reads the garden.
//!
//! - [`SeedTunnel`] (one per seed, named after the Seed): the WireGuard CIDR and the gateway slots.
//! - [`ShootPeer`] (one per shoot with an allocation, named after the shoot's control-plane
//!   namespace): the shoot's tunnel address and public key.
//!
//! Both live in kubelink's namespace on the seed. A ShootPeer is written only after the shoot's
//! ShootState records the same address and key, so it also tells the controller what is recorded
//! without reading the garden again.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use kube::CustomResource;
use kube::api::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::IpamError;
use crate::gardener::ShootKey;
use crate::keys::PublicKey;
use crate::record::Recorded;

pub const GROUP: &str = "kubelink.gardener.cloud";

/// The seed's tunnel settings, as the agents use them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[kube(group = "kubelink.gardener.cloud", version = "v1alpha1", kind = "SeedTunnel", namespaced)]
#[kube(printcolumn = r#"{"name":"CIDR","type":"string","jsonPath":".spec.cidr"}"#)]
#[kube(printcolumn = r#"{"name":"Slots","type":"integer","jsonPath":".spec.slots"}"#)]
#[serde(rename_all = "camelCase")]
pub struct SeedTunnelSpec {
    /// The Seed these settings come from.
    pub seed: String,
    /// The WireGuard CIDR (validated by the extension controller against the seed's networks).
    pub cidr: String,
    /// Gateway slots: 1, or 2 for high availability.
    #[schemars(range(min = 1, max = 2))]
    pub slots: u8,
}

/// One shoot's peer on the seed's gateways.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[kube(group = "kubelink.gardener.cloud", version = "v1alpha1", kind = "ShootPeer", namespaced)]
#[kube(printcolumn = r#"{"name":"Shoot","type":"string","jsonPath":".spec.shoot"}"#)]
#[kube(printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.address"}"#)]
#[serde(rename_all = "camelCase")]
pub struct ShootPeerSpec {
    /// `namespace/name` of the Shoot in the garden.
    pub shoot: String,
    /// The shoot's tunnel address.
    pub address: String,
    /// The shoot's WireGuard public key (base64).
    pub public_key: String,
}

/// A ShootPeer as the agents use it, every field parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub shoot: ShootKey,
    pub address: IpAddr,
    pub public_key: PublicKey,
}

impl ShootPeer {
    /// The object for a shoot whose ShootState records `rec`.
    pub fn of(namespace: &str, control_plane: &str, shoot: &ShootKey, rec: &Recorded) -> Self {
        let spec = ShootPeerSpec {
            shoot: shoot.to_string(),
            address: rec.address.to_string(),
            public_key: rec.public_key.to_string(),
        };
        let metadata =
            ObjectMeta { name: Some(control_plane.into()), namespace: Some(namespace.into()), ..Default::default() };
        ShootPeer { metadata, spec }
    }

    /// Every field parsed; an error names the object and the field.
    pub fn parse(&self) -> Result<Peer, IpamError> {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        let invalid = |field: &str, value: &str, reason: String| IpamError::InvalidValue {
            field: format!("ShootPeer {name} spec.{field}"),
            value: value.chars().take(64).collect(),
            reason,
        };
        let shoot = self.spec.shoot.parse().map_err(|e| invalid("shoot", &self.spec.shoot, e))?;
        let address = self.spec.address.parse().map_err(|e| invalid("address", &self.spec.address, format!("{e}")))?;
        let public_key =
            self.spec.public_key.parse().map_err(|e| invalid("publicKey", &self.spec.public_key, format!("{e}")))?;
        Ok(Peer { shoot, address, public_key })
    }
}

impl SeedTunnel {
    pub fn of(namespace: &str, seed: &str, cidr: IpNet, slots: u8) -> Self {
        let spec = SeedTunnelSpec { seed: seed.into(), cidr: cidr.to_string(), slots };
        SeedTunnel {
            metadata: ObjectMeta { name: Some(seed.into()), namespace: Some(namespace.into()), ..Default::default() },
            spec,
        }
    }

    /// The CIDR, parsed; an error names the object and the field.
    pub fn cidr(&self) -> Result<IpNet, IpamError> {
        self.spec.cidr.parse().map_err(|e| IpamError::InvalidValue {
            field: format!("SeedTunnel {} spec.cidr", self.metadata.name.as_deref().unwrap_or_default()),
            value: self.spec.cidr.chars().take(64).collect(),
            reason: format!("{e}"),
        })
    }
}

/// What to change so that the ShootPeers in the namespace are `want` (by name).
#[derive(Debug, Default)]
pub struct PeerChanges {
    pub create: Vec<ShootPeer>,
    /// Each with the resourceVersion of the object it replaces.
    pub replace: Vec<ShootPeer>,
    pub delete: Vec<String>,
}

/// Pure diff of the listed ShootPeers against the wanted ones: an unchanged peer is not written.
pub fn plan_peers(current: &BTreeMap<String, ShootPeer>, want: &BTreeMap<String, ShootPeer>) -> PeerChanges {
    let mut changes = PeerChanges::default();
    for (name, peer) in want {
        match current.get(name) {
            None => changes.create.push(peer.clone()),
            Some(have) if have.spec == peer.spec => {}
            Some(have) => {
                let mut next = peer.clone();
                next.metadata.resource_version = have.metadata.resource_version.clone();
                changes.replace.push(next);
            }
        }
    }
    changes.delete = current.keys().filter(|n| !want.contains_key(*n)).cloned().collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use kube::CustomResourceExt;

    #[test]
    fn a_shoot_peer_round_trips_and_garbage_names_the_field() {
        let shoot = ShootKey::new("garden-dev", "a");
        let rec =
            Recorded { address: "192.168.128.10".parse().unwrap(), public_key: PrivateKey::generate().public_key() };
        let peer = ShootPeer::of("kubelink", "shoot--dev--a", &shoot, &rec);
        assert_eq!(peer.metadata.name.as_deref(), Some("shoot--dev--a"));
        let parsed = peer.parse().unwrap();
        assert_eq!((parsed.shoot, parsed.address, parsed.public_key), (shoot, rec.address, rec.public_key));
        let mut bad = peer.clone();
        bad.spec.public_key = "x".repeat(500);
        let err = bad.parse().unwrap_err().to_string();
        assert!(err.contains("ShootPeer shoot--dev--a spec.publicKey"), "{err}");
        assert!(err.len() < 300, "the bad value is quoted only in part: {err}");
    }

    #[test]
    fn a_projected_shoot_peer_is_small() {
        let shoot = ShootKey::new("garden-project", "shoot-00001");
        let rec =
            Recorded { address: "192.168.128.10".parse().unwrap(), public_key: PrivateKey::generate().public_key() };
        let bytes =
            serde_json::to_vec(&ShootPeer::of("kubelink", "shoot--project--shoot-00001", &shoot, &rec)).unwrap();
        assert!(bytes.len() < 300, "{} bytes", bytes.len());
    }

    #[test]
    fn only_what_differs_is_written() {
        let rec = |a: &str, k: u8| Recorded { address: a.parse().unwrap(), public_key: PublicKey::from_bytes([k; 32]) };
        let peer = |n: &str, r: Recorded| {
            let shoot = ShootKey::new("garden-dev", n);
            let mut p = ShootPeer::of("kubelink", &format!("shoot--dev--{n}"), &shoot, &r);
            p.metadata.resource_version = Some("7".into());
            (format!("shoot--dev--{n}"), p)
        };
        let current: BTreeMap<_, _> = [
            peer("same", rec("192.168.128.10", 1)),
            peer("moved", rec("192.168.128.11", 2)),
            peer("gone", rec("192.168.128.12", 3)),
        ]
        .into();
        let want: BTreeMap<_, _> = [
            peer("same", rec("192.168.128.10", 1)),
            peer("moved", rec("192.168.128.13", 2)),
            peer("new", rec("192.168.128.14", 4)),
        ]
        .into();
        let changes = plan_peers(&current, &want);
        assert_eq!(changes.create.iter().map(|p| p.spec.shoot.as_str()).collect::<Vec<_>>(), ["garden-dev/new"]);
        assert_eq!(changes.replace.len(), 1);
        assert_eq!(changes.replace[0].spec.address, "192.168.128.13");
        assert_eq!(changes.replace[0].metadata.resource_version.as_deref(), Some("7"), "a replace is guarded");
        assert_eq!(changes.delete, ["shoot--dev--gone"]);
    }

    /// The chart ships the CRDs generated from these types, as templates (gardenlet renders
    /// `templates/` only) behind `crds.enabled`. `KUBELINK_UPDATE_CRDS=1` rewrites them.
    #[test]
    fn the_charts_crds_are_the_generated_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/kubelink/templates");
        for (file, crd) in [("seedtunnels", SeedTunnel::crd()), ("shootpeers", ShootPeer::crd())] {
            let text = format!(
                "{{{{- /* Generated from ipam/src/projection.rs; KUBELINK_UPDATE_CRDS=1 cargo test -p kubelink-ipam rewrites it. */}}}}\n\
                 {{{{- if .Values.crds.enabled }}}}\n{}{{{{- end }}}}\n",
                serde_yaml_ng::to_string(&crd).unwrap()
            );
            let path = dir.join(format!("crd-{file}.yaml"));
            if std::env::var_os("KUBELINK_UPDATE_CRDS").is_some() {
                std::fs::write(&path, &text).unwrap();
            }
            let shipped = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(shipped == text, "{} differs from the type; run with KUBELINK_UPDATE_CRDS=1", path.display());
        }
    }
}
