//! The pure diff between a desired and an observed device: the smallest update that makes them equal.
//! An unchanged peer is never touched, because re-applying a peer can drop its session.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use ipnet::IpNet;
use kubelink_contract::keys::PublicKey;

use super::{DeviceSpec, ObservedDevice, ObservedPeer, PeerSpec};

/// Changes to one existing peer; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct PeerChange {
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Option<BTreeSet<IpNet>>,
    /// `Some(0)` turns keepalive off.
    pub persistent_keepalive: Option<u16>,
}

impl PeerChange {
    fn is_empty(&self) -> bool {
        self.endpoint.is_none() && self.allowed_ips.is_none() && self.persistent_keepalive.is_none()
    }
}

/// An update applied on top of the device's current state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct DeviceUpdate {
    /// Set the private key (the device's public key differs from the desired one).
    pub set_private_key: bool,
    pub listen_port: Option<u16>,
    /// `Some(0)` clears the mark.
    pub fwmark: Option<u32>,
    pub add_peers: Vec<PeerSpec>,
    pub change_peers: Vec<(PublicKey, PeerChange)>,
    pub remove_peers: Vec<PublicKey>,
}

impl DeviceUpdate {
    pub fn is_empty(&self) -> bool {
        *self == DeviceUpdate::default()
    }

    /// A one-line summary for logs (keys and counts, never secrets).
    pub fn summary(&self) -> String {
        format!(
            "key:{} port:{:?} fwmark:{:?} +{} ~{} -{} peers",
            self.set_private_key,
            self.listen_port,
            self.fwmark,
            self.add_peers.len(),
            self.change_peers.len(),
            self.remove_peers.len()
        )
    }
}

/// Computes the update that turns `observed` into `desired`.
pub fn plan(desired: &DeviceSpec, observed: &ObservedDevice) -> DeviceUpdate {
    let mut update = DeviceUpdate {
        set_private_key: observed.public_key != Some(desired.private_key.public_key()),
        listen_port: desired.listen_port.filter(|p| *p != observed.listen_port),
        fwmark: fwmark_change(desired.fwmark, observed.fwmark),
        ..DeviceUpdate::default()
    };
    for (key, want) in &desired.peers {
        match observed.peers.get(key) {
            None => update.add_peers.push(want.clone()),
            Some(have) => {
                let change = peer_change(want, have);
                if !change.is_empty() {
                    update.change_peers.push((*key, change));
                }
            }
        }
    }
    update.remove_peers = observed.peers.keys().filter(|k| !desired.peers.contains_key(k)).copied().collect();
    update
}

fn fwmark_change(want: Option<u32>, have: Option<u32>) -> Option<u32> {
    let (want, have) = (want.unwrap_or(0), have.unwrap_or(0));
    (want != have).then_some(want)
}

fn peer_change(want: &PeerSpec, have: &ObservedPeer) -> PeerChange {
    let have = &have.spec;
    let keepalive = |k: Option<u16>| k.unwrap_or(0);
    PeerChange {
        // A roaming peer's endpoint is learned from its packets: only a pinned one is enforced.
        endpoint: want.endpoint.filter(|e| Some(*e) != have.endpoint),
        allowed_ips: (want.allowed_ips != have.allowed_ips).then(|| want.allowed_ips.clone()),
        persistent_keepalive: (keepalive(want.persistent_keepalive) != keepalive(have.persistent_keepalive))
            .then(|| keepalive(want.persistent_keepalive)),
    }
}

#[cfg(test)]
mod tests {
    use kubelink_contract::keys::PrivateKey;

    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn peer(n: u8, ip: &str) -> PeerSpec {
        PeerSpec {
            public_key: key(n),
            endpoint: None,
            allowed_ips: [ip.parse().unwrap()].into(),
            persistent_keepalive: None,
        }
    }

    fn spec(peers: Vec<PeerSpec>) -> DeviceSpec {
        DeviceSpec {
            name: "kl0".parse().unwrap(),
            private_key: PrivateKey::from_bytes([7; 32]),
            listen_port: Some(51820),
            fwmark: None,
            peers: peers.into_iter().map(|p| (p.public_key, p)).collect(),
        }
    }

    fn observed_from(spec: &DeviceSpec) -> ObservedDevice {
        ObservedDevice {
            public_key: Some(spec.private_key.public_key()),
            listen_port: spec.listen_port.unwrap_or(0),
            fwmark: spec.fwmark,
            peers: spec
                .peers
                .values()
                .map(|p| {
                    let seen = ObservedPeer { spec: p.clone(), last_handshake: None, rx_bytes: 0, tx_bytes: 0 };
                    (p.public_key, seen)
                })
                .collect(),
        }
    }

    #[test]
    fn equal_device_needs_nothing() {
        let want = spec(vec![peer(1, "10.0.0.1/32"), peer(2, "10.0.0.2/32")]);
        assert!(plan(&want, &observed_from(&want)).is_empty());
    }

    #[test]
    fn fresh_device_gets_key_port_and_all_peers() {
        let want = spec(vec![peer(1, "10.0.0.1/32"), peer(2, "10.0.0.2/32")]);
        let update = plan(&want, &ObservedDevice::default());
        assert!(update.set_private_key);
        assert_eq!(update.listen_port, Some(51820));
        assert_eq!(update.add_peers.len(), 2);
        assert!(update.change_peers.is_empty() && update.remove_peers.is_empty());
    }

    #[test]
    fn only_the_differing_peer_is_touched() {
        let want = spec(vec![peer(1, "10.0.0.1/32"), peer(2, "10.0.0.2/32"), peer(3, "10.0.0.3/32")]);
        let mut seen = observed_from(&want);
        // peer 2 has a wrong allowed IP, peer 3 is missing, peer 9 is extra.
        seen.peers.get_mut(&key(2)).unwrap().spec.allowed_ips = ["10.9.9.9/32".parse().unwrap()].into();
        seen.peers.remove(&key(3));
        let extra = ObservedPeer { spec: peer(9, "10.0.0.9/32"), last_handshake: None, rx_bytes: 0, tx_bytes: 0 };
        seen.peers.insert(key(9), extra);

        let update = plan(&want, &seen);
        assert!(!update.set_private_key);
        assert_eq!(update.add_peers, vec![peer(3, "10.0.0.3/32")]);
        assert_eq!(update.change_peers.len(), 1);
        assert_eq!(update.change_peers[0].0, key(2));
        assert_eq!(update.change_peers[0].1.allowed_ips, Some(peer(2, "10.0.0.2/32").allowed_ips));
        assert_eq!(update.remove_peers, vec![key(9)]);
    }

    #[test]
    fn roamed_endpoint_is_left_alone_but_pinned_one_is_enforced() {
        let mut want = spec(vec![peer(1, "10.0.0.1/32")]);
        let mut seen = observed_from(&want);
        seen.peers.get_mut(&key(1)).unwrap().spec.endpoint = Some("192.0.2.7:4000".parse().unwrap());
        assert!(plan(&want, &seen).is_empty(), "learned endpoint must not cause churn");

        let pinned: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        want.peers.get_mut(&key(1)).unwrap().endpoint = Some(pinned);
        let update = plan(&want, &seen);
        assert_eq!(update.change_peers, vec![(key(1), PeerChange { endpoint: Some(pinned), ..Default::default() })]);
    }

    #[test]
    fn keepalive_none_and_zero_are_the_same() {
        let want = spec(vec![peer(1, "10.0.0.1/32")]);
        let mut seen = observed_from(&want);
        seen.peers.get_mut(&key(1)).unwrap().spec.persistent_keepalive = Some(0);
        assert!(plan(&want, &seen).is_empty());
        seen.peers.get_mut(&key(1)).unwrap().spec.persistent_keepalive = Some(25);
        assert_eq!(plan(&want, &seen).change_peers[0].1.persistent_keepalive, Some(0));
    }

    #[test]
    fn fwmark_and_key_changes() {
        let mut want = spec(vec![]);
        let mut seen = observed_from(&want);
        want.fwmark = Some(0x51);
        assert_eq!(plan(&want, &seen).fwmark, Some(0x51));
        seen.fwmark = Some(0x51);
        want.fwmark = None;
        assert_eq!(plan(&want, &seen).fwmark, Some(0));
        seen.fwmark = None;
        want.private_key = PrivateKey::from_bytes([8; 32]);
        assert!(plan(&want, &seen).set_private_key);
    }

    #[test]
    fn unset_listen_port_keeps_what_the_device_chose() {
        let mut want = spec(vec![]);
        want.listen_port = None;
        let mut seen = observed_from(&want);
        seen.listen_port = 40001;
        assert!(plan(&want, &seen).is_empty());
    }

    #[test]
    fn thousand_peers_plus_one_adds_exactly_one() {
        let mut peers: Vec<PeerSpec> = (0..1000u32)
            .map(|i| {
                let mut bytes = [0u8; 32];
                bytes[..4].copy_from_slice(&i.to_be_bytes());
                let ip = format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255);
                PeerSpec { public_key: PublicKey::from_bytes(bytes), ..peer(0, &ip) }
            })
            .collect();
        let seen = observed_from(&spec(peers.clone()));
        peers.push(peer(255, "10.255.0.1/32"));
        let update = plan(&spec(peers), &seen);
        assert_eq!(update.add_peers.len(), 1);
        assert!(update.change_peers.is_empty() && update.remove_peers.is_empty() && !update.set_private_key);
    }
}
