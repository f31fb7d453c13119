//! Userspace WireGuard: gotatun (the maintained boringtun line) in this process, on a tun device.
//!
//! The tun link is made persistent, so it outlives the process with its ifindex, addresses and the
//! routes that point at it; a restarted agent re-attaches to it and only the WireGuard sessions are new
//! (one handshake). Operators reach the device with `wg show`/`wg set` over the standard UAPI socket.
//! The tun transport under gotatun is kubelink's own ([`super::tun`]): with offload, the fast path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use gotatun::device::uapi::UapiServer;
use gotatun::device::{Device, DeviceBuilder, Peer};
use gotatun::x25519;
use ipnet::IpNet;
use ipnetwork::IpNetwork;
use kubelink_contract::keys::PublicKey;
use tokio::sync::Mutex;

use super::tun::{MtuHandle, TunRx, TunTx};
use super::udp::UdpFactory;
use super::{
    BackendKind, DeviceSpec, DeviceUpdate, ObservedDevice, ObservedPeer, Offload, PeerChange, PeerSpec, WgBackend,
    WgError,
};
use crate::link::Link;

type GtDevice = Device<(UdpFactory, TunTx, TunRx)>;

pub struct UserspaceBackend {
    link: Link,
    devices: Mutex<HashMap<String, GtDevice>>,
    /// Per device: tells gotatun the tun's MTU after the link layer set it.
    mtus: std::sync::Mutex<HashMap<String, MtuHandle>>,
    endpoints: EndpointMemory,
    offload: Offload,
    /// Devices configured but left without their UDP socket by a failed rebind ([`reconnect`]):
    /// the next apply brings them up first.
    disconnected: std::sync::Mutex<HashSet<String>>,
}

impl UserspaceBackend {
    /// A backend with the fast path as `--wg-offload` defaults.
    pub fn new(link: Link) -> Self {
        Self::with_offload(link, Offload::default())
    }

    pub fn with_offload(link: Link, offload: Offload) -> Self {
        let endpoints = EndpointMemory::new(state_dir());
        let devices = Mutex::new(HashMap::new());
        Self { link, devices, mtus: Default::default(), endpoints, offload, disconnected: Default::default() }
    }
}

impl UserspaceBackend {
    /// Makes sure `device` has its UDP socket: brings it up again when the last rebind failed
    /// (`failed`, or remembered from an earlier apply).
    async fn connected(&self, name: &str, device: &GtDevice, failed: Option<std::io::Error>) -> Result<(), WgError> {
        {
            let mut down = self.disconnected.lock().unwrap_or_else(|e| e.into_inner());
            if failed.is_none() && !down.contains(name) {
                return Ok(());
            }
            down.insert(name.to_string());
        }
        if let Some(e) = failed {
            tracing::info!(device = name, "rebinding the UDP socket failed ({e}); bringing the device up again");
        }
        reconnect(device).await.map_err(|e| WgError::backend(name, "bring the UDP socket up again", e))?;
        self.disconnected.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        Ok(())
    }
}

/// gotatun rebinds its UDP socket on a key or port change. The old socket is closed by tasks that
/// are aborted, not awaited, so it may still be open at the rebind: "address in use", and the
/// device is left configured but without a connection (no handshakes, no traffic) until something
/// rebinds it. Brings it up again once the old socket is gone (within about 1.3 s).
async fn reconnect(device: &GtDevice) -> Result<(), gotatun::device::Error> {
    let mut delay = Duration::from_millis(5);
    loop {
        tokio::time::sleep(delay).await;
        device.suspend().await;
        match device.resume().await {
            Err(gotatun::device::Error::Bind(e, _))
                if e.kind() == std::io::ErrorKind::AddrInUse && delay < Duration::from_secs(1) =>
            {
                delay *= 2;
            }
            result => return result,
        }
    }
}

/// Where the userspace backend keeps what must outlive the process (learned peer endpoints). Should
/// be on the host (a hostPath in the DaemonSet), beside the persistent tun it belongs to.
pub fn state_dir() -> PathBuf {
    std::env::var_os("KUBELINK_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/run/kubelink"))
}

/// Endpoints learned by roaming, remembered across restarts. A restarted gateway has new sessions
/// and, without them, no address to reach a shoot until the shoot gives up on its old session and
/// re-handshakes (up to 15 s later); with them it handshakes as soon as it has a packet to send.
struct EndpointMemory {
    dir: PathBuf,
    saved: std::sync::Mutex<HashMap<String, BTreeMap<PublicKey, SocketAddr>>>,
}

impl EndpointMemory {
    fn new(dir: PathBuf) -> Self {
        Self { dir, saved: std::sync::Mutex::new(HashMap::new()) }
    }

    fn path(&self, device: &str) -> PathBuf {
        self.dir.join(format!("{device}.endpoints.json"))
    }

    fn load(&self, device: &str) -> BTreeMap<PublicKey, SocketAddr> {
        let text = std::fs::read_to_string(self.path(device)).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_default()
    }

    /// Writes the endpoints when they differ from what was last written (tmp file + rename).
    fn remember(&self, device: &str, observed: &ObservedDevice) {
        let now: BTreeMap<PublicKey, SocketAddr> =
            observed.peers.iter().filter_map(|(k, p)| p.spec.endpoint.map(|e| (*k, e))).collect();
        let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        if saved.get(device) == Some(&now) {
            return;
        }
        let result = std::fs::create_dir_all(&self.dir).and_then(|_| {
            let tmp = self.path(device).with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&now).unwrap_or_default())?;
            std::fs::rename(&tmp, self.path(device))
        });
        match result {
            Ok(()) => {
                saved.insert(device.to_string(), now);
            }
            Err(e) => tracing::warn!(device, "cannot remember peer endpoints in {}: {e}", self.dir.display()),
        }
    }

    fn forget(&self, device: &str) {
        let _ = std::fs::remove_file(self.path(device));
        self.saved.lock().unwrap_or_else(|e| e.into_inner()).remove(device);
    }
}

#[async_trait]
impl WgBackend for UserspaceBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Userspace
    }

    async fn ensure(&self, spec: &DeviceSpec) -> Result<(), WgError> {
        let mut devices = self.devices.lock().await;
        if let Some(device) = devices.get(spec.name.as_ref()) {
            // Every pass: a device a failed rebind left without its socket may need no update.
            return self.connected(&spec.name, device, None).await;
        }
        match self.link.get(&spec.name).await? {
            Some(l) if l.kind.as_deref() == Some("tun") => {
                tracing::info!(device = %spec.name, ifindex = l.index, "adopting the existing tun device");
            }
            Some(l) => {
                tracing::warn!(device = %spec.name, kind = ?l.kind, "replacing a link of another kind with a userspace device");
                self.link.delete(&spec.name, l.index).await?;
            }
            None => {}
        }
        let (device, mtu) = start(spec, &self.endpoints.load(&spec.name), self.offload).await?;
        devices.insert(spec.name.to_string(), device);
        self.mtus.lock().unwrap_or_else(|e| e.into_inner()).insert(spec.name.to_string(), mtu);
        Ok(())
    }

    async fn mtu_set(&self, name: &str) {
        if let Some(mtu) = self.mtus.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            mtu.refresh();
        }
    }

    async fn read(&self, name: &str) -> Result<Option<ObservedDevice>, WgError> {
        let devices = self.devices.lock().await;
        let Some(device) = devices.get(name) else { return Ok(None) };
        let seen = device.read(async |d| observed(d.private_key(), d.listen_port(), d.fwmark(), d.peers().await)).await;
        self.endpoints.remember(name, &seen);
        Ok(Some(seen))
    }

    async fn apply(&self, spec: &DeviceSpec, update: &DeviceUpdate) -> Result<(), WgError> {
        let devices = self.devices.lock().await;
        let device = devices.get(spec.name.as_ref()).ok_or_else(|| WgError::NoDevice(spec.name.to_string()))?;
        self.connected(&spec.name, device, None).await?;
        let secret = update.set_private_key.then(|| x25519::StaticSecret::from(*spec.private_key.to_bytes()));
        let fwmark_result = device
            .write(async |w| {
                if let Some(secret) = secret {
                    w.set_private_key(secret).await;
                }
                if let Some(port) = update.listen_port {
                    w.set_listen_port(port);
                }
                for peer in &update.add_peers {
                    w.add_peer(to_gotatun(peer));
                }
                for (key, change) in &update.change_peers {
                    w.modify_peer(&x25519::PublicKey::from(*key.as_bytes()), |p| modify(p, change)).await;
                }
                for key in &update.remove_peers {
                    w.remove_peer(&x25519::PublicKey::from(*key.as_bytes())).await;
                }
                update.fwmark.map(|m| w.set_fwmark(m))
            })
            .await;
        let fwmark_result = match fwmark_result {
            Err(gotatun::device::Error::Bind(e, _)) => {
                // The configuration is in; only the new socket is missing.
                self.connected(&spec.name, device, Some(e)).await?;
                None
            }
            other => other.map_err(|e| WgError::backend(&spec.name, "configure", e))?,
        };
        match fwmark_result {
            Some(Err(e)) => Err(WgError::backend(&spec.name, "set fwmark", e)),
            _ => Ok(()),
        }
    }

    async fn force_handshake(&self, name: &str, peer: &PublicKey) -> Result<(), WgError> {
        let devices = self.devices.lock().await;
        let device = devices.get(name).ok_or_else(|| WgError::NoDevice(name.to_string()))?;
        // gotatun's call sends the initiation and then waits, without a limit, for the answer. The
        // device carries on with the handshake by itself; we only need the initiation sent.
        let key = x25519::PublicKey::from(*peer.as_bytes());
        let kick = device.force_handshake(&key);
        match tokio::time::timeout(std::time::Duration::from_millis(100), kick).await {
            Ok(result) => result.map_err(|e| WgError::backend(name, "force handshake", e)),
            Err(_) => Ok(()),
        }
    }

    async fn remove(&self, name: &str) -> Result<(), WgError> {
        if let Some(device) = self.devices.lock().await.remove(name) {
            device.stop().await;
        }
        self.mtus.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
        self.endpoints.forget(name);
        self.link.delete_by_name(name).await?;
        Ok(())
    }
}

/// Opens (or re-attaches to) the persistent tun and starts gotatun on it with the UAPI socket.
/// Roaming peers start at their remembered endpoints.
async fn start(
    spec: &DeviceSpec,
    remembered: &BTreeMap<PublicKey, SocketAddr>,
    offload: Offload,
) -> Result<(GtDevice, MtuHandle), WgError> {
    let err = |op| move |e: &dyn std::fmt::Display| WgError::backend(&spec.name, op, e);
    let (tun_tx, tun_rx, mtu) =
        super::tun::open(&spec.name, offload == Offload::On).map_err(|e| err("open tun")(&e))?;
    let uapi = UapiServer::default_unix_socket(&spec.name, None, None).map_err(|e| err("UAPI socket")(&e))?;
    let secret = x25519::StaticSecret::from(*spec.private_key.to_bytes());
    let builder = DeviceBuilder::new()
        .with_udp(UdpFactory::new(offload == Offload::On))
        .with_ip_pair(tun_tx, tun_rx)
        .with_uapi(uapi)
        .with_private_key(secret)
        .with_listen_port(spec.listen_port.unwrap_or(0))
        .with_peers(spec.peers.values().map(|p| {
            let mut peer = to_gotatun(p);
            peer.endpoint = peer.endpoint.or_else(|| remembered.get(&p.public_key).copied());
            peer
        }));
    let device = builder.build().await.map_err(|e| err("start")(&e))?;
    if spec.peers.is_empty() {
        bind_now(&device, spec.listen_port.unwrap_or(0)).await.map_err(|e| err("bind")(&e))?;
    }
    tracing::info!(device = %spec.name, peers = spec.peers.len(), "started userspace WireGuard device (gotatun)");
    Ok((device, mtu))
}

/// gotatun opens its UDP sockets at build only when it has peers, and adding peers later does not
/// open them. A port change does: set another port and back in one write, so the device listens from
/// the start and a gateway that starts before its shoots are allocated still answers them.
async fn bind_now(device: &GtDevice, port: u16) -> Result<(), gotatun::device::Error> {
    device
        .write(async |w| {
            w.set_listen_port(port.wrapping_add(1).max(1));
            w.set_listen_port(port);
        })
        .await
}

fn to_net(n: &IpNet) -> IpNetwork {
    // Both types enforce the same prefix bounds, so this cannot fail for a valid IpNet.
    IpNetwork::new(n.addr(), n.prefix_len()).expect("IpNet prefix is in range")
}

fn to_gotatun(p: &PeerSpec) -> Peer {
    let mut peer = Peer::new(x25519::PublicKey::from(*p.public_key.as_bytes()));
    peer.endpoint = p.endpoint;
    peer.allowed_ips = p.allowed_ips.iter().map(to_net).collect();
    peer.keepalive = p.persistent_keepalive.filter(|k| *k != 0);
    peer
}

fn modify(p: &mut gotatun::device::configure::PeerMut, change: &PeerChange) {
    if let Some(endpoint) = change.endpoint {
        p.set_endpoint(Some(endpoint));
    }
    if let Some(ips) = &change.allowed_ips {
        p.clear_allowed_ips();
        p.add_allowed_ips(ips.iter().map(to_net));
    }
    if let Some(k) = change.persistent_keepalive {
        p.set_keepalive((k != 0).then_some(k));
    }
}

fn observed(
    key: Option<&x25519::StaticSecret>,
    listen_port: u16,
    fwmark: Option<u32>,
    peers: Vec<gotatun::device::configure::PeerStats>,
) -> ObservedDevice {
    ObservedDevice {
        public_key: key.map(|k| PublicKey::from_bytes(x25519::PublicKey::from(k).to_bytes())),
        listen_port,
        fwmark: fwmark.filter(|m| *m != 0),
        peers: peers
            .into_iter()
            .map(|ps| {
                let key = PublicKey::from_bytes(ps.peer.public_key.to_bytes());
                let seen = ObservedPeer {
                    spec: PeerSpec {
                        public_key: key,
                        endpoint: ps.peer.endpoint,
                        allowed_ips: ps
                            .peer
                            .allowed_ips
                            .iter()
                            .filter_map(|n| IpNet::new(n.ip(), n.prefix()).ok())
                            .collect(),
                        persistent_keepalive: ps.peer.keepalive.filter(|k| *k != 0),
                    },
                    last_handshake: ps.stats.last_handshake,
                    rx_bytes: ps.stats.rx_bytes as u64,
                    tx_bytes: ps.stats.tx_bytes as u64,
                };
                (key, seen)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    const PORT: u16 = 51999;

    /// Device `name`: one per test, because the UAPI socket directory is shared by all namespaces.
    fn spec(name: &str, key: &PrivateKey) -> DeviceSpec {
        let peer = PeerSpec::new(PrivateKey::generate().public_key());
        DeviceSpec {
            name: name.parse().expect("a valid interface name"),
            private_key: key.clone(),
            listen_port: Some(PORT),
            fwmark: None,
            peers: [(peer.public_key, peer)].into(),
        }
    }

    /// Whether something in this namespace holds the UDP port (IPv4 or dual-stack).
    fn port_held() -> bool {
        std::net::UdpSocket::bind(("0.0.0.0", PORT)).is_err()
    }

    /// A backend (plain path, endpoints kept under `state`) with device `name` of [`spec`] started.
    async fn started(state: PathBuf, name: &str) -> Result<(UserspaceBackend, DeviceSpec), String> {
        let link = Link::open().map_err(|e| e.to_string())?;
        let backend = UserspaceBackend {
            endpoints: EndpointMemory::new(state),
            ..UserspaceBackend::with_offload(link, Offload::Off)
        };
        let want = spec(name, &PrivateKey::generate());
        backend.ensure(&want).await.map_err(|e| e.to_string())?;
        Ok((backend, want))
    }

    /// Twenty key changes in a row: after each, the device has its UDP socket again. gotatun's
    /// rebind raced the old socket's close ("address in use") and left the device deaf.
    async fn rekeys(state: PathBuf) -> Result<(), String> {
        let (backend, mut want) = started(state, "klrekey0").await?;
        assert!(port_held(), "the new device listens on {PORT}");
        for round in 0..20 {
            want.private_key = PrivateKey::generate();
            let update = DeviceUpdate { set_private_key: true, ..DeviceUpdate::default() };
            backend.apply(&want, &update).await.map_err(|e| format!("round {round}: {e}"))?;
            assert!(port_held(), "round {round}: the device lost its UDP socket");
            let seen = backend.read(&want.name).await.map_err(|e| e.to_string())?.expect("the device");
            assert_eq!(seen.public_key, Some(want.private_key.public_key()), "round {round}");
        }
        backend.remove(&want.name).await.map_err(|e| e.to_string())
    }

    /// A rebind that keeps failing (the new port is taken for longer than the retries) fails the
    /// apply and leaves the device without a socket; once the port is free, the next pass's
    /// `ensure` brings it up, although the device needs no update any more.
    async fn a_device_left_down_is_brought_up_by_the_next_pass(state: PathBuf) -> Result<(), String> {
        let (backend, mut want) = started(state, "kldown0").await?;
        let taken = std::net::UdpSocket::bind(("::", PORT + 1)).map_err(|e| e.to_string())?;
        want.listen_port = Some(PORT + 1);
        let update = DeviceUpdate { listen_port: Some(PORT + 1), ..DeviceUpdate::default() };
        let failed = backend.apply(&want, &update).await;
        assert!(failed.is_err(), "the port is taken: {failed:?}");
        drop(taken);
        let seen = backend.read(&want.name).await.map_err(|e| e.to_string())?.expect("the device");
        assert!(super::super::plan(&want, &seen).is_empty(), "the configuration is in: no update to apply");
        backend.ensure(&want).await.map_err(|e| e.to_string())?;
        let free = std::net::UdpSocket::bind(("::", PORT + 1));
        assert!(free.is_err(), "the next pass's ensure did not bring the device's socket up");
        backend.remove(&want.name).await.map_err(|e| e.to_string())
    }

    /// Runs `test` on a thread in a network namespace of its own, with a runtime of two workers
    /// (the rebind race needs another thread to drop the old socket on). Skips without root,
    /// except under CI.
    fn in_private_namespace<F>(what: &str, test: fn(PathBuf) -> F)
    where
        F: std::future::Future<Output = Result<(), String>>,
    {
        let state = std::env::temp_dir().join(format!("kubelink-{what}-{}", std::process::id()));
        let run = std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: a plain syscall; it moves this thread (and the runtime's threads it
                // starts) into a network namespace of its own.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("unshare: {}", std::io::Error::last_os_error()));
                }
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
                rt.map_err(|e| e.to_string())?.block_on(test(state))
            })
            .join()
            .expect("the test thread")
        });
        match run {
            Err(e) if e.starts_with("unshare") && std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("SKIPPED {what} (needs root): {e}")
            }
            other => assert_eq!(other, Ok(())),
        }
    }

    #[test]
    fn a_device_left_down_comes_up_on_the_next_pass() {
        in_private_namespace("userspace-left-down", a_device_left_down_is_brought_up_by_the_next_pass);
    }

    #[test]
    fn key_changes_leave_the_device_listening() {
        in_private_namespace("userspace-key-changes", rekeys);
    }
}
