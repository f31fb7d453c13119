//! Kernel WireGuard over generic netlink, links over rtnetlink.
//!
//! The device lives in the kernel: it survives the agent, and a new agent adopts it as it is. An update
//! goes out as few WG_CMD_SET_DEVICE messages as fit it ([`wire`]: many peers per page-sized message,
//! a peer with very many allowed IPs split across messages), over one socket the backend keeps. A key,
//! port or fwmark change sets only those attributes: the peers stay (a new key ends their sessions by
//! the kernel's own rules, but they are not removed and re-added). Reads still go through
//! defguard_wireguard_rs. `KUBELINK_WG_PEERS_PER_MESSAGE=N` caps the peers per message (1: one message
//! per peer, the baseline of the benchmark in docs/benchmarks.md).

mod genl;
mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use defguard_wireguard_rs::host::Host;
use defguard_wireguard_rs::peer::Peer;
use defguard_wireguard_rs::{Kernel, WGApi, WireguardInterfaceApi};
use ipnet::IpNet;
use kubelink_contract::keys::PublicKey;
use netlink_packet_wireguard::WireguardMessage;

use self::genl::Genl;
use self::wire::Packing;
use super::{BackendKind, DeviceSpec, DeviceUpdate, ObservedDevice, ObservedPeer, PeerSpec, WgBackend, WgError};
use crate::link::Link;

/// Caps the peers per message; 1 is the one-message-per-peer baseline.
pub const PEERS_PER_MESSAGE_ENV: &str = "KUBELINK_WG_PEERS_PER_MESSAGE";

pub struct KernelBackend {
    link: Link,
    packing: Packing,
    /// Opened on first use and kept; dropped after a failure, so the next apply starts clean.
    socket: Arc<Mutex<Option<Genl>>>,
}

impl KernelBackend {
    /// Packing from [`PEERS_PER_MESSAGE_ENV`], else as many peers as fit a message.
    pub fn new(link: Link) -> Self {
        Self::with_packing(link, packing_from_env(std::env::var(PEERS_PER_MESSAGE_ENV).ok().as_deref()))
    }

    pub fn with_packing(link: Link, packing: Packing) -> Self {
        Self { link, packing, socket: Arc::new(Mutex::new(None)) }
    }
}

/// An unset or unreadable value keeps the default: a typo must not stop the agent.
fn packing_from_env(value: Option<&str>) -> Packing {
    let Some(value) = value else { return Packing::default() };
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => {
            tracing::info!("{PEERS_PER_MESSAGE_ENV}={n}: at most {n} peers per netlink message");
            Packing { max_peers: n, ..Packing::default() }
        }
        _ => {
            tracing::warn!("{PEERS_PER_MESSAGE_ENV}={value:?} is not a positive number; ignored");
            Packing::default()
        }
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
        let messages = wire::set_device_messages(spec, update, self.packing)
            .map_err(|e| WgError::backend(&spec.name, "encode update", e))?;
        if messages.is_empty() {
            return Ok(());
        }
        let count = messages.len();
        let started = Instant::now();
        self.send(&spec.name, messages).await?;
        tracing::info!(
            device = %spec.name,
            peers = update.add_peers.len() + update.change_peers.len() + update.remove_peers.len(),
            added = update.add_peers.len(),
            changed = update.change_peers.len(),
            removed = update.remove_peers.len(),
            device_attrs = update.set_private_key || update.listen_port.is_some() || update.fwmark.is_some(),
            messages = count,
            elapsed_ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0,
            "kernel device updated"
        );
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), WgError> {
        // Deleting the link ourselves: defguard's remove_interface wants a DNS manager first.
        self.link.delete_by_name(name).await?;
        Ok(())
    }
}

impl KernelBackend {
    /// Sends the messages in order over the kept socket, on the blocking pool.
    async fn send(&self, name: &str, messages: Vec<WireguardMessage>) -> Result<(), WgError> {
        let socket = self.socket.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut guard = socket.lock().unwrap_or_else(|e| e.into_inner());
            let sent = send_all(&mut guard, messages);
            if sent.is_err() {
                // A socket that saw a failure may still hold a reply: start the next apply afresh.
                *guard = None;
            }
            sent
        })
        .await
        .map_err(|e| WgError::backend(name, "set device", e))?;
        result.map_err(|(i, e)| WgError::backend(name, "set device", format!("message {}: {e}", i + 1)))
    }
}

/// Sends every message; on failure, the index of the message that failed.
fn send_all(socket: &mut Option<Genl>, messages: Vec<WireguardMessage>) -> Result<(), (usize, genl::GenlError)> {
    let genl = match socket {
        Some(genl) => genl,
        None => socket.insert(Genl::open().map_err(|e| (0, e))?),
    };
    for (i, message) in messages.into_iter().enumerate() {
        genl.set_device(message).map_err(|e| (i, e))?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_per_message_from_the_environment() {
        // rows: the variable's value, the peers per message it gives
        let batched = Packing::default().max_peers;
        for (value, want) in
            [(None, batched), (Some("1"), 1), (Some(" 50 "), 50), (Some("0"), batched), (Some("x"), batched)]
        {
            assert_eq!(packing_from_env(value).max_peers, want, "{value:?}");
        }
    }
}
