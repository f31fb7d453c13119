//! The agent's own gateway state for slot 0, written as a `kubelink run` file: namespace tests run a
//! gateway with exactly the device, peers and nftables table the agent would apply
//! (`agent::gateway_desired`), without a seed around it.

use std::collections::BTreeSet;
use std::time::Duration;

use ipnet::IpNet;
use kubelink::agent::{Settings, ShootPeer, gateway_desired};
use kubelink::firewall::FirewallSpec;
use kubelink_ipam::contract::Slot;
use kubelink_ipam::keys::PrivateKey;

/// The `kubelink run` file of slot 0's gateway on `device` (UDP 51820) with `peers`, and the
/// firewall spec it gives (each peer's `vpn_server` becomes a `snat.vpnServers` entry).
pub fn slot0(device: &str, cidr: IpNet, key: &PrivateKey, peers: &BTreeSet<ShootPeer>) -> (String, FirewallSpec) {
    let zero = Duration::ZERO;
    let settings = Settings {
        device: device.parse().expect("a valid device name"),
        listen_port: 51820,
        mtu: kubelink::mtu::MtuSetting::Auto,
        warmup: zero,
        give_up_after: zero,
        standby: zero,
        resync: zero,
    };
    let d = gateway_desired(&settings, cidr, Slot::ALL[0], key, peers).expect("the gateway's desired state");
    let spec = d.firewall.clone().expect("a gateway has a firewall");
    let mut text = format!("snat:\n  cidr: {}\n  to: {}\n", spec.cidr, spec.snat_to);
    if !spec.vpn_servers.is_empty() {
        text += "  vpnServers:\n";
        for (shoot, server) in &spec.vpn_servers {
            text += &format!("    \"{shoot}\": \"{server}\"\n");
        }
    }
    let addresses: Vec<String> = d.addresses.iter().map(|a| a.to_string()).collect();
    text += &format!(
        "device:\n  name: {device}\n  privateKey: {}\n  listenPort: 51820\n  addresses: [{}]\n  peers:\n",
        key.expose_base64().as_str(),
        addresses.join(", ")
    );
    for (k, p) in &d.device.peers {
        let allowed: Vec<String> = p.allowed_ips.iter().map(|a| a.to_string()).collect();
        text += &format!("  - publicKey: {k}\n    allowedIPs: [{}]\n", allowed.join(", "));
    }
    (text, spec)
}
