//! What one agent shows about itself at `/status` (JSON), for `kubelink status --seed`: its role and
//! slot, readiness, the endpoint it publishes, its gateway peers with handshake age and traffic, or
//! the routes it installs. Names, addresses and public keys only: nothing here is secret.

use std::collections::BTreeMap;

use ipnet::IpNet;
use kubelink_contract::keys::PublicKey;
use serde::{Deserialize, Serialize};

use crate::config::RouteSpec;
use crate::wg::{ObservedDevice, PeerSpec};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub node: String,
    /// `gateway` or `router`.
    pub role: String,
    pub slot: Option<u8>,
    pub ready: bool,
    /// Why the node is not ready, as `/readyz` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready: Option<String>,
    /// What shoots dial for the slot held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The gateway device's public key (the slot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default)]
    pub peers: Vec<PeerView>,
    #[serde(default)]
    pub routes: Vec<RouteView>,
    /// What the gateway's filter dropped of what came out of the tunnel, as of the last pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<crate::firewall::Drops>,
}

/// One shoot on a gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    /// `namespace/name` of the Shoot.
    pub shoot: String,
    pub address: Option<IpNet>,
    pub public_key: String,
    /// Seconds since the last handshake; `None`: none yet.
    pub handshake_age_seconds: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One route a router installs towards the gateways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteView {
    pub destination: IpNet,
    /// The gateway node, or `None` for a route onto a device.
    pub via: Option<std::net::IpAddr>,
}

/// The gateway's peers as desired, with what the device last showed of each.
pub fn gateway_peers(
    desired: &BTreeMap<PublicKey, PeerSpec>,
    shoots: &BTreeMap<PublicKey, String>,
    observed: Option<&ObservedDevice>,
) -> Vec<PeerView> {
    let mut peers: Vec<PeerView> = desired
        .iter()
        .map(|(key, spec)| {
            let seen = observed.and_then(|o| o.peers.get(key));
            PeerView {
                shoot: shoots.get(key).cloned().unwrap_or_else(|| "unknown".into()),
                address: spec.allowed_ips.iter().next().copied(),
                public_key: key.to_string(),
                handshake_age_seconds: seen.and_then(|p| p.last_handshake).map(|d| d.as_secs()),
                rx_bytes: seen.map_or(0, |p| p.rx_bytes),
                tx_bytes: seen.map_or(0, |p| p.tx_bytes),
            }
        })
        .collect();
    peers.sort_by(|a, b| a.shoot.cmp(&b.shoot));
    peers
}

pub fn routes(routes: &[RouteSpec]) -> Vec<RouteView> {
    routes.iter().map(|r| RouteView { destination: r.destination, via: r.gateway }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wg::ObservedPeer;
    use kubelink_contract::keys::PrivateKey;
    use std::time::Duration;

    #[test]
    fn peers_carry_their_shoot_address_and_what_the_device_showed() {
        let (a, b) = (PrivateKey::generate().public_key(), PrivateKey::generate().public_key());
        let spec = |key: PublicKey, ip: &str| PeerSpec {
            public_key: key,
            endpoint: None,
            allowed_ips: [ip.parse().unwrap()].into(),
            persistent_keepalive: None,
        };
        let desired = [(a, spec(a, "192.168.128.2/32")), (b, spec(b, "192.168.128.3/32"))].into();
        let shoots = [(a, "garden-dev/b-shoot".to_string()), (b, "garden-dev/a-shoot".to_string())].into();
        let mut observed = ObservedDevice::default();
        let seen = ObservedPeer {
            spec: spec(a, "192.168.128.2/32"),
            last_handshake: Some(Duration::from_secs(7)),
            rx_bytes: 10,
            tx_bytes: 20,
        };
        observed.peers.insert(a, seen);
        let peers = gateway_peers(&desired, &shoots, Some(&observed));
        assert_eq!(
            peers.iter().map(|p| p.shoot.as_str()).collect::<Vec<_>>(),
            ["garden-dev/a-shoot", "garden-dev/b-shoot"]
        );
        assert_eq!((peers[0].handshake_age_seconds, peers[0].rx_bytes), (None, 0), "never seen: no handshake");
        assert_eq!((peers[1].handshake_age_seconds, peers[1].rx_bytes, peers[1].tx_bytes), (Some(7), 10, 20));
        assert_eq!(peers[1].address, Some("192.168.128.2/32".parse().unwrap()));
        let json = serde_json::to_string(&NodeView { peers, ..NodeView::default() }).unwrap();
        assert!(!json.contains("private"), "{json}");
    }
}
