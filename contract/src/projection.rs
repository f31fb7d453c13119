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

use std::net::IpAddr;

use ipnet::IpNet;
use kube::CustomResource;
use kube::api::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ShootKey;
use crate::error::InvalidValue;
use crate::keys::PublicKey;

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
    /// What shoots dial for each slot (`host:port`, in slot order; empty for a slot without one), as
    /// the extension controller decided it: the seed's configuration or the slot Service's
    /// load-balancer address. The agents only show it; no node decides an endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
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
    /// The address of the shoot's own VPN server (vpn-seed-server in its control-plane namespace):
    /// the gateways forward the shoot's VPN connection there and nowhere else. Absent: the shoot's
    /// VPN connection is dropped like anything else it opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn_server: Option<String>,
}

/// A ShootPeer as the agents use it, every field parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub shoot: ShootKey,
    pub address: IpAddr,
    pub public_key: PublicKey,
    pub vpn_server: Option<IpAddr>,
}

impl ShootPeer {
    /// The object for `shoot`, named after its control-plane namespace.
    pub fn of(namespace: &str, control_plane: &str, shoot: &ShootKey, address: IpAddr, public_key: &PublicKey) -> Self {
        let spec = ShootPeerSpec {
            shoot: shoot.to_string(),
            address: address.to_string(),
            public_key: public_key.to_string(),
            vpn_server: None,
        };
        let metadata =
            ObjectMeta { name: Some(control_plane.into()), namespace: Some(namespace.into()), ..Default::default() };
        ShootPeer { metadata, spec }
    }

    /// Every field parsed; an error names the object and the field.
    pub fn parse(&self) -> Result<Peer, InvalidValue> {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        let invalid = |field: &str, value: &str, reason: String| InvalidValue {
            field: format!("ShootPeer {name} spec.{field}"),
            value: value.chars().take(64).collect(),
            reason,
        };
        let shoot = self.spec.shoot.parse().map_err(|e| invalid("shoot", &self.spec.shoot, e))?;
        let address = self.spec.address.parse().map_err(|e| invalid("address", &self.spec.address, format!("{e}")))?;
        let public_key =
            self.spec.public_key.parse().map_err(|e| invalid("publicKey", &self.spec.public_key, format!("{e}")))?;
        let vpn_server = match &self.spec.vpn_server {
            Some(text) => Some(text.parse().map_err(|e| invalid("vpnServer", text, format!("{e}")))?),
            None => None,
        };
        Ok(Peer { shoot, address, public_key, vpn_server })
    }
}

impl SeedTunnel {
    /// `endpoints`: each slot's, in slot order (`None`: the slot has none).
    pub fn of(namespace: &str, seed: &str, cidr: IpNet, slots: u8, endpoints: &[Option<String>]) -> Self {
        let endpoints = endpoints.iter().map(|e| e.clone().unwrap_or_default()).collect();
        let spec = SeedTunnelSpec { seed: seed.into(), cidr: cidr.to_string(), slots, endpoints };
        SeedTunnel {
            metadata: ObjectMeta { name: Some(seed.into()), namespace: Some(namespace.into()), ..Default::default() },
            spec,
        }
    }

    /// The CIDR, parsed; an error names the object and the field.
    pub fn cidr(&self) -> Result<IpNet, InvalidValue> {
        self.spec.cidr.parse().map_err(|e| InvalidValue {
            field: format!("SeedTunnel {} spec.cidr", self.metadata.name.as_deref().unwrap_or_default()),
            value: self.spec.cidr.chars().take(64).collect(),
            reason: format!("{e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    #[test]
    fn a_shoot_peer_round_trips_and_garbage_names_the_field() {
        let shoot = ShootKey::new("garden-dev", "a");
        let (address, public_key) = ("192.168.128.10".parse().unwrap(), PrivateKey::generate().public_key());
        let peer = ShootPeer::of("kubelink", "shoot--dev--a", &shoot, address, &public_key);
        assert_eq!(peer.metadata.name.as_deref(), Some("shoot--dev--a"));
        let parsed = peer.parse().unwrap();
        assert_eq!((parsed.shoot, parsed.address, parsed.public_key), (shoot, address, public_key));
        assert_eq!(parsed.vpn_server, None);
        let mut vpn = peer.clone();
        vpn.spec.vpn_server = Some("100.64.7.10".into());
        assert_eq!(vpn.parse().unwrap().vpn_server, Some("100.64.7.10".parse().unwrap()));
        vpn.spec.vpn_server = Some("vpn-seed-server".into());
        let err = vpn.parse().unwrap_err().to_string();
        assert!(err.contains("ShootPeer shoot--dev--a spec.vpnServer"), "{err}");
        let mut bad = peer.clone();
        bad.spec.public_key = "x".repeat(500);
        let err = bad.parse().unwrap_err().to_string();
        assert!(err.contains("ShootPeer shoot--dev--a spec.publicKey"), "{err}");
        assert!(err.len() < 300, "the bad value is quoted only in part: {err}");
    }

    #[test]
    fn a_projected_shoot_peer_is_small() {
        let shoot = ShootKey::new("garden-project", "shoot-00001");
        let public_key = PrivateKey::generate().public_key();
        let peer = ShootPeer::of(
            "kubelink",
            "shoot--project--shoot-00001",
            &shoot,
            "192.168.128.10".parse().unwrap(),
            &public_key,
        );
        let bytes = serde_json::to_vec(&peer).unwrap();
        assert!(bytes.len() < 300, "{} bytes", bytes.len());
    }
}
