//! The seed agent (`kubelink agent`): every seed node runs one. It takes part in the gateway election;
//! as a gateway it holds the WireGuard device with one peer per shoot of this seed and source-NATs seed
//! traffic into it; otherwise it routes shoot addresses to the gateway node(s). Desired state is
//! computed purely here ([`gateway_desired`], [`crate::routing::router_routes`]); [`role`] decides
//! the node's role as a pure state machine, [`cluster`] reads and writes Kubernetes, [`run`] is the
//! loop that performs what [`role`] decides.

pub mod cluster;
pub mod datapath;
pub mod events;
pub mod local_pods;
pub mod next_hops;
pub mod role;
pub mod run;
pub mod slot_endpoints;
pub mod slot_key;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use kubelink_contract::Slot;
use kubelink_contract::keys::{PrivateKey, PublicKey};

use crate::config::Desired;
use crate::firewall::FirewallSpec;
use crate::wg::{DeviceSpec, PeerSpec};

/// A shoot of this seed with an allocation: what its gateway peer needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShootPeer {
    pub public_key: PublicKey,
    pub address: IpAddr,
    /// `namespace/name` of the Shoot in the garden (a metrics label).
    pub shoot: String,
    /// The shoot's control-plane namespace on the seed (the ShootPeer's name): its pods may reach this
    /// shoot ([`crate::pod_scope`]).
    pub control_plane: String,
    /// The shoot's own VPN server (ShootPeer `spec.vpnServer`), where the gateway forwards the shoot's
    /// VPN connection.
    pub vpn_server: Option<IpAddr>,
}

/// The node-local settings of the agent.
#[derive(Debug, Clone)]
pub struct Settings {
    pub device: crate::ifname::IfName,
    pub listen_port: u16,
    pub mtu: crate::mtu::MtuSetting,
    /// How long a new slot holder gets no router traffic while shoots re-handshake with it.
    pub warmup: std::time::Duration,
    /// How long the gateway's node-local state may keep failing before the node gives its slot up.
    pub give_up_after: std::time::Duration,
    /// How long a node that gave a slot up takes no slot.
    pub standby: std::time::Duration,
    /// How often the last pass's state is re-applied between passes (drift by hand, `wg set`).
    pub resync: std::time::Duration,
}

/// The gateway of `slot`: device with the slot's key and address, every shoot a roaming peer, SNAT to
/// the slot address. `None` when the CIDR has no room for the slot.
pub fn gateway_desired(
    s: &Settings,
    cidr: IpNet,
    slot: Slot,
    key: &PrivateKey,
    shoots: &BTreeSet<ShootPeer>,
) -> Option<Desired> {
    let address = slot.address(cidr)?;
    // A shoot claiming a gateway's own address would take that address's traffic: never a peer.
    let slots: Vec<IpAddr> = Slot::ALL.into_iter().filter_map(|s| s.address(cidr)).collect();
    let peers: BTreeMap<PublicKey, PeerSpec> = shoots
        .iter()
        .filter(|p| cidr.contains(&p.address))
        .filter(|p| {
            let own = slots.contains(&p.address);
            if own {
                tracing::warn!(
                    shoot = %p.shoot,
                    "ShootPeer of shoot {} spec.address: {} is a gateway slot's address; skipped (shoots get \
                     addresses above the slots'; check who wrote it)",
                    p.shoot,
                    p.address
                );
            }
            !own
        })
        .map(|p| {
            let mut peer = PeerSpec::new(p.public_key);
            peer.allowed_ips.insert(IpNet::from(p.address));
            (p.public_key, peer)
        })
        .collect();
    // Only shoots that are peers: a skipped shoot's address must open nothing.
    let vpn_servers = shoots
        .iter()
        .filter(|p| peers.contains_key(&p.public_key))
        .filter_map(|p| Some((p.address, p.vpn_server?)))
        .collect();
    let device = DeviceSpec {
        name: s.device.clone(),
        private_key: key.clone(),
        listen_port: Some(s.listen_port),
        fwmark: None,
        peers,
    };
    let own = IpNet::new(address, cidr.prefix_len()).ok()?;
    Some(Desired {
        device,
        addresses: [own].into(),
        mtu: s.mtu,
        routes: vec![],
        firewall: Some(FirewallSpec { device: s.device.to_string(), cidr, snat_to: address, vpn_servers }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let zero = std::time::Duration::ZERO;
        Settings {
            device: "kubelink0".parse().unwrap(),
            listen_port: 51820,
            mtu: crate::mtu::MtuSetting::Auto,
            warmup: zero,
            give_up_after: zero,
            standby: zero,
            resync: zero,
        }
    }

    fn shoot(n: u8, addr: &str) -> ShootPeer {
        ShootPeer {
            public_key: PublicKey::from_bytes([n; 32]),
            address: addr.parse().unwrap(),
            shoot: format!("garden-p/s{n}"),
            control_plane: format!("shoot--p--s{n}"),
            vpn_server: Some(format!("100.64.7.{n}").parse().unwrap()),
        }
    }

    #[test]
    fn gateway_has_slot_address_peers_and_snat() {
        let cidr: IpNet = "192.168.128.0/22".parse().unwrap();
        let shoots = [
            shoot(1, "192.168.128.10"),
            shoot(2, "192.168.128.11"),
            shoot(3, "10.0.0.1"),
            shoot(4, "192.168.128.1"),
            shoot(5, "192.168.128.2"),
        ]
        .into();
        let d = gateway_desired(&settings(), cidr, Slot::ALL[1], &PrivateKey::from_bytes([9; 32]), &shoots).unwrap();
        assert_eq!(d.addresses, ["192.168.128.2/22".parse().unwrap()].into());
        assert_eq!(d.device.peers.len(), 2, "an address outside the CIDR or a slot's own address is no peer");
        let p = &d.device.peers[&PublicKey::from_bytes([1; 32])];
        assert_eq!(p.allowed_ips, ["192.168.128.10/32".parse().unwrap()].into());
        assert_eq!(p.endpoint, None, "shoots dial in: endpoints are learned");
        let firewall = d.firewall.unwrap();
        assert_eq!(firewall.snat_to, "192.168.128.2".parse::<IpAddr>().unwrap());
        let vpn: Vec<(IpAddr, IpAddr)> = firewall.vpn_servers.into_iter().collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            vpn,
            [(ip("192.168.128.10"), ip("100.64.7.1")), (ip("192.168.128.11"), ip("100.64.7.2"))],
            "only peers' VPN servers"
        );
        assert!(d.routes.is_empty());
    }

    #[test]
    fn no_room_for_the_slot_means_no_gateway() {
        let cidr: IpNet = "192.168.128.0/31".parse().unwrap();
        assert!(gateway_desired(&settings(), cidr, Slot::ALL[1], &PrivateKey::generate(), &BTreeSet::new()).is_none());
    }
}
