//! Kernel WireGuard over generic netlink (defguard_wireguard_rs), links over rtnetlink.
//!
//! The device lives in the kernel: it survives the agent, and a new agent adopts it as it is. Peers are
//! set one message each (a peer with many allowed IPs could overflow a shared message); a key, port or
//! fwmark change rewrites the whole device (the kernel API replaces peers then, and sessions end anyway
//! when the key changes).

use std::net::SocketAddr;
use std::time::SystemTime;

use async_trait::async_trait;
use defguard_wireguard_rs::host::Host;
use defguard_wireguard_rs::key::Key;
use defguard_wireguard_rs::net::IpAddrMask;
use defguard_wireguard_rs::peer::Peer;
use defguard_wireguard_rs::{InterfaceConfiguration, Kernel, WGApi, WireguardInterfaceApi};
use ipnet::IpNet;
use kubelink_ipam::keys::PublicKey;

use super::{BackendKind, DeviceSpec, DeviceUpdate, ObservedDevice, ObservedPeer, PeerSpec, WgBackend, WgError};
use crate::link::Link;

pub struct KernelBackend {
    link: Link,
}

impl KernelBackend {
    pub fn new(link: Link) -> Self {
        Self { link }
    }
}

/// Runs a blocking defguard call on the blocking pool.
async fn blocking<T: Send + 'static>(
    name: &str,
    op: &'static str,
    f: impl FnOnce(WGApi<Kernel>) -> Result<T, defguard_wireguard_rs::error::WireguardInterfaceError> + Send + 'static,
) -> Result<T, WgError> {
    let api = WGApi::<Kernel>::new(name).map_err(|e| WgError::backend(name, op, e))?;
    tokio::task::spawn_blocking(move || f(api))
        .await
        .map_err(|e| WgError::backend(name, op, e))?
        .map_err(|e| WgError::backend(name, op, e))
}

#[async_trait]
impl WgBackend for KernelBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kernel
    }

    async fn ensure(&self, spec: &DeviceSpec) -> Result<(), WgError> {
        match self.link.get(&spec.name).await? {
            Some(l) if l.kind.as_deref() == Some("wireguard") => return Ok(()),
            Some(l) => {
                tracing::warn!(device = %spec.name, kind = ?l.kind, "replacing a link of another kind with a WireGuard device");
                self.link.delete(&spec.name, l.index).await?;
            }
            None => {}
        }
        self.link.create_wireguard(&spec.name).await?;
        tracing::info!(device = %spec.name, "created kernel WireGuard device");
        Ok(())
    }

    async fn read(&self, name: &str) -> Result<Option<ObservedDevice>, WgError> {
        match self.link.get(name).await? {
            Some(l) if l.kind.as_deref() == Some("wireguard") => {}
            _ => return Ok(None),
        }
        let host = blocking(name, "read", |api| api.read_interface_data()).await?;
        Ok(Some(observed(&host)))
    }

    async fn apply(&self, spec: &DeviceSpec, update: &DeviceUpdate) -> Result<(), WgError> {
        if update.set_private_key || update.listen_port.is_some() || update.fwmark.is_some() {
            return self.rewrite(spec).await;
        }
        for peer in update.add_peers.iter().chain(update.change_peers.iter().filter_map(|(k, _)| spec.peers.get(k))) {
            let p = to_defguard(peer);
            blocking(&spec.name, "set peer", move |api| api.configure_peer(&p)).await?;
        }
        for key in &update.remove_peers {
            let k = Key::new(*key.as_bytes());
            blocking(&spec.name, "remove peer", move |api| api.remove_peer(&k)).await?;
        }
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), WgError> {
        // Deleting the link ourselves: defguard's remove_interface wants a DNS manager first.
        self.link.delete_by_name(name).await?;
        Ok(())
    }
}

impl KernelBackend {
    /// Key, port or fwmark changed: set the whole device, peers included. Addresses are flushed by
    /// this call and restored by the link layer in the same reconcile pass.
    async fn rewrite(&self, spec: &DeviceSpec) -> Result<(), WgError> {
        let config = InterfaceConfiguration {
            name: spec.name.to_string(),
            prvkey: spec.private_key.expose_base64().to_string(),
            addresses: vec![],
            port: spec.listen_port.unwrap_or(0),
            peers: spec.peers.values().map(to_defguard).collect(),
            mtu: None,
            fwmark: Some(spec.fwmark.unwrap_or(0)),
        };
        blocking(&spec.name, "configure device", move |api| api.configure_interface(&config)).await
    }
}

fn to_defguard(p: &PeerSpec) -> Peer {
    let mut peer = Peer::new(Key::new(*p.public_key.as_bytes()));
    peer.endpoint = p.endpoint;
    // Always sent, so that 0 turns a keepalive off.
    peer.persistent_keepalive_interval = Some(p.persistent_keepalive.unwrap_or(0));
    peer.allowed_ips = p.allowed_ips.iter().map(|n| IpAddrMask::new(n.addr(), n.prefix_len())).collect();
    peer
}

pub(crate) fn observed(host: &Host) -> ObservedDevice {
    ObservedDevice {
        public_key: host.private_key.as_ref().map(|k| PublicKey::from_bytes(k.public_key().as_array())),
        listen_port: host.listen_port,
        fwmark: host.fwmark.filter(|m| *m != 0),
        peers: host
            .peers
            .values()
            .map(|p| {
                let key = PublicKey::from_bytes(p.public_key.as_array());
                (key, observed_peer(key, p))
            })
            .collect(),
    }
}

fn observed_peer(public_key: PublicKey, p: &Peer) -> ObservedPeer {
    let endpoint: Option<SocketAddr> = p.endpoint;
    ObservedPeer {
        spec: PeerSpec {
            public_key,
            endpoint,
            allowed_ips: p.allowed_ips.iter().filter_map(|a| IpNet::new(a.address, a.cidr).ok()).collect(),
            persistent_keepalive: p.persistent_keepalive_interval.filter(|k| *k != 0),
        },
        last_handshake: p
            .last_handshake
            .filter(|t| *t != SystemTime::UNIX_EPOCH)
            .and_then(|t| SystemTime::now().duration_since(t).ok()),
        rx_bytes: p.rx_bytes,
        tx_bytes: p.tx_bytes,
    }
}
