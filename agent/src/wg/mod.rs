//! The WireGuard device layer: the desired device, what a backend reports, a pure plan between the two,
//! and the backends (kernel over generic netlink, userspace gotatun in-process) behind one trait.

pub mod fake;
mod kernel;
pub mod plan;
mod tun;
mod udp;
mod userspace;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use kubelink_contract::keys::{PrivateKey, PublicKey};
use serde::Serialize;

pub use kernel::KernelBackend;
pub use plan::{DeviceUpdate, PeerChange, plan};
pub use userspace::UserspaceBackend;

/// The device kubelink wants (link-level settings such as addresses and MTU live in [`crate::link`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub name: crate::ifname::IfName,
    pub private_key: PrivateKey,
    /// `None`: let the device pick (and keep) a port.
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub peers: BTreeMap<PublicKey, PeerSpec>,
}

/// A peer kubelink wants. `endpoint: None` means "learned by roaming": the plan leaves it alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerSpec {
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    #[serde(rename = "allowedIPs")]
    pub allowed_ips: BTreeSet<IpNet>,
    pub persistent_keepalive: Option<u16>,
}

impl PeerSpec {
    pub fn new(public_key: PublicKey) -> Self {
        Self { public_key, endpoint: None, allowed_ips: BTreeSet::new(), persistent_keepalive: None }
    }
}

/// A device as its backend reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedDevice {
    pub public_key: Option<PublicKey>,
    pub listen_port: u16,
    pub fwmark: Option<u32>,
    pub peers: BTreeMap<PublicKey, ObservedPeer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedPeer {
    #[serde(flatten)]
    pub spec: PeerSpec,
    /// Time since the last handshake; `None` when there was none.
    #[serde(rename = "lastHandshakeSecs", serialize_with = "secs")]
    pub last_handshake: Option<Duration>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

/// Which implementation carries a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Kernel,
    Userspace,
}

impl BackendKind {
    /// The rtnetlink link kind a device of this backend has.
    pub fn link_kind(self) -> &'static str {
        match self {
            BackendKind::Kernel => "wireguard",
            BackendKind::Userspace => "tun",
        }
    }
}

/// `--wg-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// Kernel WireGuard when the kernel can create a link, else userspace.
    Auto,
    Kernel,
    Userspace,
}

/// `--wg-offload`: the userspace engine's fast path (tun offload: large reads, merged writes; UDP GSO).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Offload {
    /// Tun offload and UDP GSO: 1.4-1.5x the plain path's TCP throughput (docs/benchmarks.md).
    #[default]
    On,
    /// One packet per tun read and write and per datagram, as gotatun's own transports (the
    /// benchmark's baseline).
    Off,
}

#[derive(Debug, thiserror::Error)]
pub enum WgError {
    #[error("device {device}: {op}: {reason}")]
    Backend { device: String, op: &'static str, reason: String },
    #[error("device {0} does not exist")]
    NoDevice(String),
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
}

impl WgError {
    pub fn backend(device: &str, op: &'static str, reason: impl std::fmt::Display) -> Self {
        WgError::Backend { device: device.to_string(), op, reason: reason.to_string() }
    }
}

/// What every WireGuard implementation offers kubelink. Links are created and removed here; addresses,
/// MTU and up/down are the link layer's job and the same for both.
#[async_trait]
pub trait WgBackend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// Creates the device, or adopts the existing one of that name (same ifindex, state kept).
    async fn ensure(&self, spec: &DeviceSpec) -> Result<(), WgError>;
    /// Reads the device; `Ok(None)` when it does not exist (or this process does not hold it).
    async fn read(&self, name: &str) -> Result<Option<ObservedDevice>, WgError>;
    /// Applies an update computed by [`plan`].
    async fn apply(&self, spec: &DeviceSpec, update: &DeviceUpdate) -> Result<(), WgError>;
    /// Removes the device (its link included).
    async fn remove(&self, name: &str) -> Result<(), WgError>;
    /// The link layer has set the device's MTU: an engine that pads packets to it rereads it now.
    async fn mtu_set(&self, _name: &str) {}
    /// Starts a handshake with a peer now. Kernel WireGuard retransmits lost initiations by itself;
    /// the userspace engine gives up after one when there is no data queued.
    async fn force_handshake(&self, _name: &str, _peer: &PublicKey) -> Result<(), WgError> {
        Ok(())
    }
    /// Drops our sessions with a peer and starts a new handshake: for a gateway that stopped
    /// answering although our session with it looks alive (its successor has the same key but not
    /// our session, and WireGuard itself re-keys only after 15 s of unanswered data). Removing and
    /// re-adding the peer is what both implementations offer; the kernel sends the handshake as soon
    /// as the re-added peer has a keepalive, the userspace engine on [`WgBackend::force_handshake`].
    async fn restart_session(&self, spec: &DeviceSpec, key: &PublicKey) -> Result<(), WgError> {
        let Some(peer) = spec.peers.get(key) else { return Ok(()) };
        self.apply(spec, &DeviceUpdate { remove_peers: vec![*key], ..DeviceUpdate::default() }).await?;
        self.apply(spec, &DeviceUpdate { add_peers: vec![peer.clone()], ..DeviceUpdate::default() }).await?;
        self.force_handshake(&spec.name, key).await
    }
}

/// A session is dead when its last handshake is older than this (WireGuard's REJECT_AFTER_TIME).
pub const STALE_HANDSHAKE: Duration = Duration::from_secs(180);

/// Whether a peer we dial (pinned endpoint, keepalive on) has no live session and should be kicked.
pub fn needs_handshake(want: &PeerSpec, seen: &ObservedPeer) -> bool {
    want.endpoint.is_some()
        && want.persistent_keepalive.is_some_and(|k| k > 0)
        && seen.last_handshake.is_none_or(|age| age > STALE_HANDSHAKE)
}

/// Picks the backend for `--wg-backend`; for `auto`, probes whether the kernel can create a WireGuard
/// link and says why it chose what it chose.
pub async fn select(choice: BackendChoice, offload: Offload, link: &crate::link::Link) -> Arc<dyn WgBackend> {
    let kind = match choice {
        BackendChoice::Kernel => BackendKind::Kernel,
        BackendChoice::Userspace => BackendKind::Userspace,
        BackendChoice::Auto => match link.probe_wireguard().await {
            Ok(()) => {
                tracing::info!("wg-backend auto: kernel WireGuard is available, using it");
                BackendKind::Kernel
            }
            Err(e) => {
                tracing::info!("wg-backend auto: kernel WireGuard unavailable ({e}); using userspace (gotatun)");
                BackendKind::Userspace
            }
        },
    };
    match kind {
        BackendKind::Kernel => Arc::new(KernelBackend::new(link.clone())),
        BackendKind::Userspace => Arc::new(UserspaceBackend::with_offload(link.clone(), offload)),
    }
}

/// Reads any kubelink device from outside the process that runs it: kernel devices over generic
/// netlink, userspace ones over their UAPI socket. Blocking.
pub fn read_any(name: &str, kind: BackendKind) -> Result<ObservedDevice, WgError> {
    use defguard_wireguard_rs::{Kernel, Userspace, WGApi, WireguardInterfaceApi};
    let host = match kind {
        BackendKind::Kernel => WGApi::<Kernel>::new(name).and_then(|api| api.read_interface_data()),
        BackendKind::Userspace => WGApi::<Userspace>::new(name).and_then(|api| api.read_interface_data()),
    };
    host.map(|h| kernel::observed(&h)).map_err(|e| WgError::backend(name, "read", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(spec: &PeerSpec, age: Option<u64>) -> ObservedPeer {
        ObservedPeer { spec: spec.clone(), last_handshake: age.map(Duration::from_secs), rx_bytes: 0, tx_bytes: 0 }
    }

    #[test]
    fn only_dialled_peers_without_live_session_need_a_handshake() {
        let mut dialled = PeerSpec::new(PublicKey::from_bytes([1; 32]));
        dialled.endpoint = Some("192.0.2.1:51820".parse().unwrap());
        dialled.persistent_keepalive = Some(21);
        // rows: last handshake age (s), expected
        for (age, want) in [(None, true), (Some(10), false), (Some(179), false), (Some(181), true)] {
            assert_eq!(needs_handshake(&dialled, &seen(&dialled, age)), want, "age {age:?}");
        }
        let roaming = PeerSpec { endpoint: None, ..dialled.clone() };
        assert!(!needs_handshake(&roaming, &seen(&roaming, None)), "a peer that dials in is not dialled");
        let quiet = PeerSpec { persistent_keepalive: None, ..dialled };
        assert!(!needs_handshake(&quiet, &seen(&quiet, None)), "without keepalive the session starts on demand");
    }
}
